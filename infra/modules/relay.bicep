// Azure Relay for siteDbPath relay: the namespace, the hybrid connection the app opens
// its tunnel over (the app is the sender), the app identity's Azure Relay Sender role on
// that hybrid connection only (no key for the app to store), and a Listen-only rule for
// the on-premises listener, whose key goes straight into Key Vault (never an output).

@description('Name of the relay namespace.')
param name string

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Name of the hybrid connection to the site database.')
param hybridConnectionName string

@description('host:port of SQL Server as the on-premises listener reaches it; written as the hybrid connection\'s endpoint user metadata (what Hybrid Connection Manager connects to).')
param sqlEndpoint string

@description('Principal ID of the function app identity (Azure Relay Sender on the hybrid connection).')
param appPrincipalId string

@description('Name of the Key Vault that receives the Listen rule\'s key.')
param keyVaultName string

// Azure Relay Sender: send on the hybrid connection, read the entity; nothing else.
var azureRelaySender = '26baccc8-eea7-41f1-98f4-1762cc7f685d'

resource namespace 'Microsoft.Relay/namespaces@2021-11-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
}

resource hybridConnection 'Microsoft.Relay/namespaces/hybridConnections@2021-11-01' = {
  parent: namespace
  name: hybridConnectionName
  properties: {
    requiresClientAuthorization: true
    userMetadata: string([
      {
        key: 'endpoint'
        value: sqlEndpoint
      }
    ])
  }
}

// The on-premises listener's rule: Listen only, on this hybrid connection only.
resource listenRule 'Microsoft.Relay/namespaces/hybridConnections/authorizationRules@2021-11-01' = {
  parent: hybridConnection
  name: 'onprem-listen'
  properties: {
    rights: [
      'Listen'
    ]
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hybridConnection.id, appPrincipalId, azureRelaySender)
  scope: hybridConnection
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureRelaySender)
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource listenKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: no expiry date: an expired secret stops the on-premises listener; rotation is a procedure (docs/deployment.md), not a timer
  parent: vault
  name: 'site-db-relay-listen-key'
  properties: {
    value: listenRule.listKeys().primaryKey
    contentType: 'relay listen key'
  }
}

output namespaceHost string = '${namespace.name}.servicebus.windows.net'
output hybridConnectionName string = hybridConnection.name
output listenKeySecretName string = listenKey.name
