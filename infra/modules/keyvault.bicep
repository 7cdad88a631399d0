// Key Vault (RBAC mode) holding every secret of cm-remediate. The secrets come from
// @secure() parameters: their values never appear in a template, a parameter file or a
// deployment's recorded inputs. The app reads them through Key Vault references with its
// user-assigned identity (Key Vault Secrets User on this vault only).

@description('Name of the vault.')
param name string

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Subnet of the function app: the only network allowed when there are no private endpoints.')
param integrationSubnetId string

@description('true: the app runs in integrationSubnetId (network default Deny). false: no VNet; the app reaches the vault over its public endpoint (default Allow; RBAC still decides every read).')
param vnetIntegration bool

@description('true: reachable only through a private endpoint (public network access disabled).')
param privateAccess bool

@description('Days a deleted vault or secret can be recovered (purge protection holds it that long).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

@description('ADMINSERVICE_AUTH refresh-token: a secret for the signed-in AdminService session, which the app renews.')
param keepAdminServiceSession bool

@description('Principal ID of the function app identity.')
param appPrincipalId string

@description('Log Analytics workspace that receives the vault audit log.')
param workspaceId string

@description('true: store siteDbConnection (the app reads the site database over the VNet); false: no such secret.')
param storeSiteDbConnection bool

@description('SITE_DB_CONNECTION: ODBC connection string of the site database; stored only with storeSiteDbConnection.')
@secure()
param siteDbConnection string

@description('ADMINSERVICE_PASSWORD: password of the synced service account; empty: not stored.')
@secure()
param adminServicePassword string

@description('ENTRA_CLIENT_SECRET: client secret of the app registration; empty: not stored.')
@secure()
param entraClientSecret string

@description('WEBSERVICE_SECRET: pre-shared secret of the ConfigMgr WebService; empty: not stored.')
@secure()
param webServiceSecret string

// Key Vault Secrets User: read secret values (Key Vault references), nothing else.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// Key Vault Secrets Officer: read and write secrets; given on one secret only.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: network default is Deny whenever the app runs in a VNet or behind private endpoints; Allow only with siteDbPath none and no subnet, where the platform resolves the Key Vault references over the public endpoint (RBAC still guards every read; tests/infra checks both cases)
  // checkov:skip=CKV_AZURE_189: public network access is Disabled with private endpoints; without them networkAcls admit only the integration subnet, or (siteDbPath none, no subnet: see CKV_AZURE_109) any network with RBAC deciding every read; checkov 3.3.30 crashes on this conditional value
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: privateAccess ? 'Disabled' : 'Enabled'
    // Without a VNet (siteDbPath none, no subnet) the platform resolves the app's Key Vault
    // references over the public endpoint: no network rule could name it.
    networkAcls: {
      defaultAction: (privateAccess || vnetIntegration) ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      virtualNetworkRules: (privateAccess || !vnetIntegration) ? [] : [
        {
          id: integrationSubnetId
          ignoreMissingVnetServiceEndpoint: false
        }
      ]
      ipRules: []
    }
  }
}

resource siteDbConnectionSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (storeSiteDbConnection) {
  // checkov:skip=CKV_AZURE_41: no expiry date: an expired secret stops the Key Vault reference resolving and the app with it; rotation is a procedure (docs/deployment.md), not a timer
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 reads no properties of a conditional (if) resource (tests/infra checks contentType)
  parent: vault
  name: 'site-db-connection'
  properties: {
    value: siteDbConnection
    contentType: 'ODBC connection string'
  }
}

resource adminServicePasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(adminServicePassword)) {
  // checkov:skip=CKV_AZURE_41: no expiry date: an expired secret stops the Key Vault reference resolving and the app with it; rotation is a procedure (docs/deployment.md), not a timer
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 reads no properties of a conditional (if) resource (tests/infra checks contentType)
  parent: vault
  name: 'adminservice-password'
  properties: {
    value: adminServicePassword
    contentType: 'password'
  }
}

resource entraClientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(entraClientSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry date: an expired secret stops the Key Vault reference resolving and the app with it; rotation is a procedure (docs/deployment.md), not a timer
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 reads no properties of a conditional (if) resource (tests/infra checks contentType)
  parent: vault
  name: 'entra-client-secret'
  properties: {
    value: entraClientSecret
    contentType: 'client secret'
  }
}

resource webServiceSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webServiceSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry date: an expired secret stops the Key Vault reference resolving and the app with it; rotation is a procedure (docs/deployment.md), not a timer
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 reads no properties of a conditional (if) resource (tests/infra checks contentType)
  parent: vault
  name: 'webservice-secret'
  properties: {
    value: webServiceSecret
    contentType: 'pre-shared secret'
  }
}

resource adminServiceSession 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (keepAdminServiceSession) {
  // checkov:skip=CKV_AZURE_41: no expiry date: the app writes a new version at every renewal of the session, which expires on Entra ID's terms, not the vault's
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov 3.3.30 reads no properties of a conditional (if) resource (tests/infra checks contentType)
  parent: vault
  name: 'adminservice-session'
  properties: {
    // A placeholder, not a session: `cmremediate sign-in` writes the session as a new
    // version with its own content type, and the app skips placeholder versions, so a
    // redeployment (which adds one) does not end the session. The secret exists so that
    // the app's write role can be scoped to it alone.
    value: '{}'
    contentType: 'placeholder'
  }
}

resource sessionOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (keepAdminServiceSession) {
  name: guid(vault.id, 'adminservice-session', appPrincipalId, keyVaultSecretsOfficer)
  scope: adminServiceSession
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Who read which secret, and from where: the vault's audit log, kept in the workspace.
resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

// Versionless URIs: a new secret version is picked up without changing the app settings.
output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
output siteDbConnectionUri string = storeSiteDbConnection ? siteDbConnectionSecret.properties.secretUri : ''
output adminServicePasswordUri string = empty(adminServicePassword) ? '' : adminServicePasswordSecret.properties.secretUri
output entraClientSecretUri string = empty(entraClientSecret) ? '' : entraClientSecretSecret.properties.secretUri
output adminServiceSessionUri string = keepAdminServiceSession ? '${vault.properties.vaultUri}secrets/adminservice-session' : ''
output webServiceSecretUri string = empty(webServiceSecret) ? '' : webServiceSecretSecret.properties.secretUri
