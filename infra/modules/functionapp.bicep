// The Linux function app (Python 3.11) and its plan: Flex Consumption (default) or
// Elastic Premium. One user-assigned identity for everything: host storage, the Flex
// deployment package, Key Vault references and Application Insights. No shared keys,
// no publishing passwords, HTTPS only.

@description('Name of the function app.')
param name string

@description('Name of the hosting plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('azd service name (azure.yaml) that deploys to this app.')
param serviceName string

@description('FlexConsumption (FC1) or ElasticPremium.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string

@description('Elastic Premium SKU (ElasticPremium only).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Threads of the Python worker (PYTHON_THREADPOOL_THREAD_COUNT).')
param workerThreadCount int

@description('Memory of one Flex Consumption instance, in MB (FlexConsumption only).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Resource ID of the user-assigned managed identity.')
param identityId string

@description('Client ID of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account (AzureWebJobsStorage).')
param storageAccountName string

@description('Blob service endpoint of the storage account.')
param blobEndpoint string

@description('Queue service endpoint of the storage account.')
param queueEndpoint string

@description('Table service endpoint of the storage account.')
param tableEndpoint string

@description('Blob container of the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Application Insights connection string (holds no secret: local authentication is off).')
param appInsightsConnectionString string

@description('Subnet the app integrates into (its way to the site database and, without private endpoints, to storage and Key Vault).')
param integrationSubnetId string

@description('true: the app integrates into integrationSubnetId; false: no VNet integration (siteDbPath none without a subnet).')
param vnetIntegration bool

@description('cm-remediate\'s own app settings (the names of shared/settings.py).')
param appSettings object

var isFlex = hostingPlan == 'FlexConsumption'

// Settings the Functions host and the platform read (and, for storage, cm-remediate too).
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The worker sends the app's logs and custom metrics through the Azure Monitor distro
  // (host.json telemetryMode OpenTelemetry; requirements.txt azure-monitor-opentelemetry).
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  PYTHON_THREADPOOL_THREAD_COUNT: string(workerThreadCount)
}

// Flex Consumption takes runtime and version from functionAppConfig and refuses these;
// Elastic Premium needs them, and a remote build to install requirements.txt on Linux.
var premiumSettings = isFlex ? {} : {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  SCM_DO_BUILD_DURING_DEPLOYMENT: 'true'
  ENABLE_ORYX_BUILD: 'true'
}

var allSettings = union(appSettings, hostSettings, premiumSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: not zone redundant, for cost (Elastic Premium would need three always-on instances); an outage only delays remediation, the queue keeps every request
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: elasticPremiumSku
    tier: 'ElasticPremium'
  }
  properties: {
    // Linux
    reserved: true
    maximumElasticWorkerCount: isFlex ? null : maximumInstanceCount
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: inbound stays public: azd deploys through the SCM endpoint (Entra ID only, basic credentials off) and monitoring calls /api/health with a function key
  // checkov:skip=CKV_AZURE_17: no client certificates: the one HTTP function, /api/health, is for monitoring and requires a function key
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; the queue (retries, poison queue) and the timer's lease ride out the loss of an instance
  // checkov:skip=CKV_AZURE_213: no platform health check: it would call /api/health without the function key (401) and recycle instances; /api/health queries the site database and AdminService and is for monitoring
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: vnetIntegration ? integrationSubnetId : null
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // Elastic Premium only: the Python 3.11 image, and all outbound traffic (Key Vault
      // references included) through the integration subnet, when there is one. Flex
      // Consumption takes the runtime from functionAppConfig.
      linuxFxVersion: isFlex ? null : 'Python|3.11'
      vnetRouteAllEnabled: (isFlex || !vnetIntegration) ? null : true
      functionAppScaleLimit: isFlex ? null : maximumInstanceCount
      minimumElasticInstanceCount: isFlex ? null : 1
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: isFlex ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    } : null
  }
}

// Deployments authenticate with Entra ID (azd does); no FTP or SCM passwords exist.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
