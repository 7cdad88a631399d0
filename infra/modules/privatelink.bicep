// Optional private endpoints: the storage account (blob, queue, table) and the vault get
// addresses in a subnet of the customer's network, and their public network access is
// disabled. The private DNS zones are created here and linked to that network, unless
// the customer's DNS (a hub zone, a policy) already answers for them.

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('Subnet that holds the private endpoints.')
param subnetId string

@description('true: create the privatelink DNS zones and link them to the subnet\'s network.')
param createPrivateDnsZones bool

@description('Resource ID of the storage account.')
param storageAccountId string

@description('Resource ID of the vault.')
param keyVaultId string

var virtualNetworkId = split(subnetId, '/subnets/')[0]
// '.vault.azure.net' -> 'privatelink.vaultcore.azure.net' (and likewise in other clouds)
var vaultZone = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'

var endpoints = [
  {
    name: 'blob'
    target: storageAccountId
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    target: storageAccountId
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    target: storageAccountId
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'vault'
    target: keyVaultId
    zone: vaultZone
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for endpoint in endpoints: if (createPrivateDnsZones) {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (endpoint, i) in endpoints: if (createPrivateDnsZones) {
  parent: zones[i]
  name: 'link-${uniqueString(virtualNetworkId)}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for endpoint in endpoints: {
  name: 'pe-${last(split(endpoint.target, '/'))}-${endpoint.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.name
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (endpoint, i) in endpoints: if (createPrivateDnsZones) {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]
