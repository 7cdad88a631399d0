// The storage account of the Functions host and of cm-remediate (queue, exporter state,
// audit and guard tables, and the Flex Consumption deployment package). No shared key:
// every caller authenticates with Entra ID and holds a data role on this account only.

@description('Name of the storage account.')
param name string

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Replication of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string

@description('Subnet of the function app: the only network allowed when there are no private endpoints.')
param integrationSubnetId string

@description('true: the app runs in integrationSubnetId (network default Deny). false: no VNet; the app reaches the account over its public endpoint (default Allow; Entra ID and data roles still decide every call).')
param vnetIntegration bool

@description('true: reachable only through private endpoints (public network access disabled).')
param privateAccess bool

@description('Public IP addresses or CIDR ranges of operators running cmremediate (empty: none).')
param operatorIpRanges array

@description('Blob container of the Flex Consumption deployment package.')
param deploymentContainerName string

@description('The remediation queue (REMEDIATION_QUEUE); its poison queue is created beside it.')
param remediationQueue string

@description('Principal ID of the function app identity.')
param appPrincipalId string

@description('Object ID of an operator (user or group) who runs cmremediate; empty: none.')
param operatorPrincipalId string

@description('Kind of operatorPrincipalId.')
param operatorPrincipalType string

// Storage Blob Data Owner: host storage (keys, timer and singleton leases), exporter state,
// the deployment package.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Blob Data Contributor: an operator reads and moves export watermarks.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
// Storage Queue Data Contributor: the remediation queue and its poison queue.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Storage Table Data Contributor: the audit table and the blast-radius guard's table.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

var appRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]
var operatorRoles = empty(operatorPrincipalId) ? [] : [
  storageBlobDataContributor
  storageQueueDataContributor
  storageTableDataContributor
]

// Without private endpoints, the integration subnet reaches the account through its
// Microsoft.Storage service endpoint, and nothing else does (but listed operators).
var subnetRules = (privateAccess || !vnetIntegration) ? [] : [
  {
    id: integrationSubnetId
    action: 'Allow'
  }
]
// Without a VNet (siteDbPath none, no subnet) the app calls from outbound addresses no
// rule can list (Flex Consumption has none of its own): the network stays open and the
// account's guard is identity alone (no shared key, no anonymous blobs, TLS 1.2).
var defaultNetworkAction = (privateAccess || vnetIntegration) ? 'Deny' : 'Allow'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: network default is Deny whenever the app runs in a VNet or behind private endpoints; Allow only with siteDbPath none and no subnet, whose callers no rule can list (identity alone guards the account then; tests/infra checks both cases)
  // checkov:skip=CKV_AZURE_206: replication is the storageSku parameter (default Standard_ZRS keeps the audit table through a zone outage; geo-redundant SKUs are allowed values); the check cannot read a parameter
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: privateAccess ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: defaultNetworkAction
      bypass: 'AzureServices'
      virtualNetworkRules: subnetRules
      ipRules: [for ipRange in operatorIpRanges: {
        value: ipRange
        action: 'Allow'
      }]
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // The exporter's watermarks are small and precious: keep deleted ones a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The app creates its queues itself; creating them here lets `cmremediate check` pass
// before the first export.
resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in [
  remediationQueue
  '${remediationQueue}-poison'
]: {
  parent: queueService
  name: queueName
}]

resource appRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appRoles: {
  name: guid(storage.id, appPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource operatorRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in operatorRoles: {
  name: guid(storage.id, operatorPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
