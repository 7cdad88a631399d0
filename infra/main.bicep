// cm-remediate in one resource group: `azd up` provisions this, then deploys the app.
// Parameters map to azd environment variables in main.parameters.json; the app-setting
// parameters are named after, and documented with, the settings of shared/settings.py.
targetScope = 'subscription'

// ---------------------------------------------------------------- environment (azd)

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (Flex Consumption must be offered there).')
param location string

@description('Resource group to create or reuse; empty: rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------- hosting

@description('FlexConsumption (FC1, scales to zero) or ElasticPremium (EP1-EP3, always one warm instance).')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Elastic Premium SKU, when hostingPlan is ElasticPremium.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string = 'EP1'

@description('Most instances the app scales out to: bounds the parallel calls to the AdminService.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('PYTHON_THREADPOOL_THREAD_COUNT: the Python worker\'s threads, one per invocation host.json lets run at once (batchSize 16 + newBatchThreshold 8); without it a 1-2 vCPU instance gets 5-6 and queues the rest.')
@minValue(1)
@maxValue(64)
param workerThreadCount int = 24

@description('Memory of one Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------- network

@description('How the app reaches the site database. vnet: it integrates into integrationSubnetId, whose network reaches the database over VPN or ExpressRoute (TCP 1433), and SITE_DB_CONNECTION is a Key Vault secret. relay: through an Azure Relay hybrid connection the app opens itself (an on-premises listener, Azure Relay Bridge, forwards to SQL Server): no VNet integration is needed, SITE_DB_CONNECTION is a Key Vault secret, the app identity gets Azure Relay Sender on the hybrid connection. none: nothing reads SQL (EXPORT_SOURCE and IDENTITY_SOURCE adminservice, through the cloud management gateway): no VNet integration is needed and no SQL secret is stored or referenced.')
@allowed([
  'vnet'
  'relay'
  'none'
])
param siteDbPath string = 'vnet'

@description('Resource ID of the subnet the app integrates into (required with siteDbPath vnet: that network reaches the site database). Delegated to Microsoft.App/environments (Flex Consumption) or Microsoft.Web/serverFarms (Elastic Premium); without private endpoints it needs the Microsoft.Storage and Microsoft.KeyVault service endpoints. Empty (siteDbPath none only): no VNet integration; the app reaches storage and Key Vault over their public endpoints, Entra ID and RBAC only.')
param integrationSubnetId string = ''

@description('siteDbPath relay: host:port of SQL Server as the on-premises listener reaches it (a static port), written to the hybrid connection\'s endpoint metadata.')
param siteDbRelayEndpoint string = ''

@description('siteDbPath relay: the on-premises listener, bridge (Azure Relay Bridge, recommended) or hcm (Hybrid Connection Manager; Microsoft supports it only with App Service\'s own sender).')
@allowed([
  'bridge'
  'hcm'
])
param siteDbRelayListener string = 'bridge'

@description('siteDbPath relay, bridge: the port name Azure Relay Bridge maps to SQL Server (PortName of its remote forwarder; azbridge -T <hybrid connection>:<port name>/<host>:<port>).')
param siteDbRelayPortName string = 'sql'

@description('Resource ID of a subnet for private endpoints of storage and Key Vault (needs integrationSubnetId: the app reaches them from inside the network); empty: none (service endpoints from the integration subnet instead).')
param privateEndpointSubnetId string = ''

@description('With private endpoints: create the privatelink DNS zones and link them to that subnet\'s network (false: your DNS answers for them).')
param createPrivateDnsZones bool = true

@description('Public IP addresses or CIDR ranges, comma-separated, from which operators run cmremediate against storage (without private endpoints); empty: none.')
param operatorIpRanges string = ''

@description('Object ID of the user or group who runs cmremediate (data roles on storage); empty: none.')
param operatorPrincipalId string = ''

@description('Kind of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'Group'

// ---------------------------------------------------------------- resources

@description('Replication of the storage account (queue, exporter state, audit table).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_ZRS'

@description('Days Log Analytics keeps logs and telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 90

@description('E-mail address the alert rules notify (poison queue, export lag, no export run, held adds, sign-in refused); empty: the rules fire in the portal only.')
param alertEmail string = ''

@description('Days a deleted vault or secret stays recoverable; purge protection keeps the name taken that long.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

// ---------------------------------------------------------------- secrets (Key Vault)

@description('SITE_DB_CONNECTION: Driver={ODBC Driver 18 for SQL Server};Server=host,port;Database=CM_<site>;Uid=...;Pwd=...;Encrypt=yes (siteDbPath vnet or relay; ignored with none); empty: not stored.')
@secure()
param siteDbConnection string = ''

@description('ADMINSERVICE_PASSWORD: password of the synced service account; empty: not set.')
@secure()
param adminServicePassword string = ''

@description('ENTRA_CLIENT_SECRET: client secret of the app registration: the confidential client of the service account\'s token request for the AdminService (needed when public client flows are off), and the app-only credential of a REST web service; empty: not set.')
@secure()
param entraClientSecret string = ''

@description('WEBSERVICE_SECRET: pre-shared secret of the ConfigMgr WebService; empty: not set.')
@secure()
param webServiceSecret string = ''

// ---------------------------------------------------------------- app settings

@description('REMEDIATION_QUEUE: name of the storage queue (3-56 characters).')
@minLength(3)
@maxLength(56)
param remediationQueue string = 'cm-remediation'

@description('EXPORT_SCHEDULE: NCRONTAB schedule (with seconds) of the export timer.')
param exportSchedule string = '0 */5 * * * *'

@description('REMEDIATION_RULES_FILE: path of the rules file, relative to the app root.')
param remediationRulesFile string = 'rules.json'

@description('EXPORT_START_TIME: ISO-8601 UTC; a first run exports messages from here on. Empty: everything still in the database.')
param exportStartTime string = ''

@description('EXPORT_OVERLAP_MINUTES: how far back each run re-reads to catch rows that commit late.')
@minValue(0)
@maxValue(1440)
param exportOverlapMinutes int = 10

@description('EXPORT_MAX_MESSAGES_PER_RUN: bound on the status messages one export run reads.')
@minValue(1)
@maxValue(1000000)
param exportMaxMessagesPerRun int = 50000

@description('ADMINSERVICE_URL: https://<CMG>/CCM_Proxy_ServerAuth/<id>/AdminService for a bearer token (community practice; Microsoft documents CCM_Proxy_MutualAuth/<id>/AdminService, the client-certificate form; the id from the undocumented vProxy_Routings); empty: not set.')
param adminServiceUrl string = ''

@description('ADMINSERVICE_AUTH: password (the service account\'s username and password) or refresh-token (a session an admin opens with cmremediate sign-in; no password stored).')
@allowed([
  'password'
  'refresh-token'
])
param adminServiceAuth string = 'password'

@description('ADMINSERVICE_SESSION_BLOB: the blob, in the state container, that keeps the signed-in session (ADMINSERVICE_AUTH refresh-token).')
param adminServiceSessionBlob string = 'adminservice-session.json'

@description('ADMINSERVICE_SCOPE: the ConfigMgr server app\'s Application ID URI + /user_impersonation.')
param adminServiceScope string = 'https://ConfigMgrService/user_impersonation'

@description('ADMINSERVICE_REQUEST_REFRESH: ask for a collection evaluation after changes.')
param adminServiceRequestRefresh bool = false

@description('ENTRA_AUTHORITY_HOST: Entra ID authority host.')
param entraAuthorityHost string = 'https://login.microsoftonline.com'

@description('ENTRA_TENANT_ID: tenant of the app registrations; default: this subscription\'s tenant.')
param entraTenantId string = tenant().tenantId

@description('ENTRA_CLIENT_ID: application (client) ID of cm-remediate\'s app registration; empty: not set.')
param entraClientId string = ''

@description('ADMINSERVICE_USERNAME: UPN of the synced service account; empty: not set.')
param adminServiceUsername string = ''

@description('ENTRA_CLIENT_CERTIFICATE_PATH: PEM file (key and certificate) in the deployed app, for app-only tokens; empty: not set.')
param entraClientCertificatePath string = ''

@description('WEBSERVICE_KIND: configmgr-webservice or rest; empty: not set.')
@allowed([
  ''
  'configmgr-webservice'
  'rest'
])
param webServiceKind string = ''

@description('WEBSERVICE_URL: URL of the web service target; empty: not set.')
param webServiceUrl string = ''

@description('WEBSERVICE_SCOPE: scope of the app-only token for WEBSERVICE_KIND=rest; empty: not set.')
param webServiceScope string = ''

@description('EXPORT_SOURCE: where the export reads status messages: the site database over SQL (sitedb) or the SMS Provider through the AdminService (adminservice). Default: sitedb with siteDbPath vnet, adminservice with none.')
@allowed([
  'sitedb'
  'adminservice'
])
param exportSource string = (siteDbPath == 'none') ? 'adminservice' : 'sitedb'

@description('IDENTITY_SOURCE: where machine names become ResourceIDs; empty: the export source.')
@allowed([
  ''
  'sitedb'
  'adminservice'
])
param identitySource string = ''

@description('RESOLVE_RETRY_HOURS: give up on an unknown device this long after its status message.')
@minValue(1)
@maxValue(720)
param resolveRetryHours int = 24

@description('RESOLVE_RETRY_DELAY_SECONDS: wait before trying an unknown device again.')
@minValue(1)
@maxValue(604800)
param resolveRetryDelaySeconds int = 900

@description('ADMINSERVICE_MAX_CONCURRENCY: AdminService calls one instance makes at once; times maximumInstanceCount, the most the SMS Provider sees from cm-remediate.')
@minValue(1)
@maxValue(256)
param adminServiceMaxConcurrency int = 16

@description('MEMBERSHIP_CLAIM_HOURS: how long cm-remediate\'s own record of an add stands in for the device\'s membership (another status message for the same device and collection is already-member without a call).')
@minValue(1)
@maxValue(720)
param membershipClaimHours int = 24

@description('MAX_ADDS_PER_COLLECTION_PER_HOUR: blast-radius guard, adds to one collection in any 60 minutes.')
@minValue(1)
@maxValue(20000)
param maxAddsPerCollectionPerHour int = 1000

@description('TLS_CA_BUNDLE: PEM file of extra trusted CAs in the deployed app; empty: not set.')
param tlsCaBundle string = ''

@description('DRY_RUN: true (the default of a first deployment) decides and records outcomes but changes no collection; set false after reviewing them.')
param dryRun bool = true

// ---------------------------------------------------------------- names

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'cm-remediate'
}
var serviceName = 'cmremediate'
var privateAccess = !empty(privateEndpointSubnetId)
// siteDbPath vnet always integrates and locks storage and Key Vault to integrationSubnetId
// (never opens them, even for an empty ID, which Azure is left to refuse); none integrates
// only when a subnet is given, else the app reaches both over their public endpoints
// (Entra ID and RBAC only, no shared key).
var vnetIntegration = (siteDbPath == 'vnet') || !empty(integrationSubnetId)
// SITE_DB_CONNECTION (secret and setting) exists only with vnet or relay, and only when given. A
// deployment that reads SQL without it is reported by the app itself (SITE_DB_MISSING),
// not refused here: infra/README.md, The site database path.
var storeSiteDbConnection = (siteDbPath != 'none') && !empty(siteDbConnection)
var relayPath = siteDbPath == 'relay'
// ADMINSERVICE_AUTH refresh-token: the signed-in session lives in a Key Vault secret.
var sessionInKeyVault = adminServiceAuth == 'refresh-token'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-cmremediate-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-cmremediate-${resourceToken}'
    applicationInsightsName: 'appi-cmremediate-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    publisherPrincipalId: identity.outputs.principalId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    location: location
    tags: tags
    alertEmail: alertEmail
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stcmr${resourceToken}'
    location: location
    tags: tags
    skuName: storageSku
    integrationSubnetId: integrationSubnetId
    vnetIntegration: vnetIntegration
    privateAccess: privateAccess
    operatorIpRanges: empty(operatorIpRanges) ? [] : split(replace(operatorIpRanges, ' ', ''), ',')
    deploymentContainerName: 'app-package'
    remediationQueue: remediationQueue
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-cmr-${resourceToken}'
    location: location
    tags: tags
    integrationSubnetId: integrationSubnetId
    vnetIntegration: vnetIntegration
    privateAccess: privateAccess
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    appPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    storeSiteDbConnection: storeSiteDbConnection
    siteDbConnection: siteDbConnection
    adminServicePassword: adminServicePassword
    entraClientSecret: entraClientSecret
    webServiceSecret: webServiceSecret
    keepAdminServiceSession: sessionInKeyVault
  }
}

module siteDbRelay 'modules/relay.bicep' = if (relayPath) {
  name: 'relay'
  scope: rg
  params: {
    name: 'relay-cmremediate-${resourceToken}'
    location: location
    tags: tags
    hybridConnectionName: 'site-db'
    sqlEndpoint: siteDbRelayEndpoint
    appPrincipalId: identity.outputs.principalId
    keyVaultName: keyVault.outputs.name
  }
}

module privateLink 'modules/privatelink.bicep' = if (privateAccess) {
  name: 'privatelink'
  scope: rg
  params: {
    location: location
    tags: tags
    subnetId: privateEndpointSubnetId
    createPrivateDnsZones: createPrivateDnsZones
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

// cm-remediate's settings. Those the model requires, or whose default the bindings need
// spelled out, are always set; optional ones only when given. Secrets are Key Vault
// references, resolved by the platform with the app's identity, except the AdminService
// session's secret: its URI itself, since the app reads and renews it.
var alwaysSet = {
  REMEDIATION_QUEUE: remediationQueue
  EXPORT_SCHEDULE: exportSchedule
  REMEDIATION_RULES_FILE: remediationRulesFile
  EXPORT_OVERLAP_MINUTES: string(exportOverlapMinutes)
  EXPORT_MAX_MESSAGES_PER_RUN: string(exportMaxMessagesPerRun)
  ADMINSERVICE_SCOPE: adminServiceScope
  ADMINSERVICE_AUTH: adminServiceAuth
  ADMINSERVICE_SESSION_BLOB: adminServiceSessionBlob
  ADMINSERVICE_REQUEST_REFRESH: adminServiceRequestRefresh ? 'true' : 'false'
  ENTRA_AUTHORITY_HOST: entraAuthorityHost
  ENTRA_TENANT_ID: entraTenantId
  EXPORT_SOURCE: exportSource
  RESOLVE_RETRY_HOURS: string(resolveRetryHours)
  RESOLVE_RETRY_DELAY_SECONDS: string(resolveRetryDelaySeconds)
  ADMINSERVICE_MAX_CONCURRENCY: string(adminServiceMaxConcurrency)
  MEMBERSHIP_CLAIM_HOURS: string(membershipClaimHours)
  MAX_ADDS_PER_COLLECTION_PER_HOUR: string(maxAddsPerCollectionPerHour)
  DRY_RUN: dryRun ? 'true' : 'false'
}

var setWhenGiven = union(
  storeSiteDbConnection ? {
    SITE_DB_CONNECTION: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.siteDbConnectionUri})'
  } : {},
  empty(exportStartTime) ? {} : {
    EXPORT_START_TIME: exportStartTime
  },
  empty(identitySource) ? {} : {
    IDENTITY_SOURCE: identitySource
  },
  empty(adminServiceUrl) ? {} : {
    ADMINSERVICE_URL: adminServiceUrl
  },
  empty(entraClientId) ? {} : {
    ENTRA_CLIENT_ID: entraClientId
  },
  empty(adminServiceUsername) ? {} : {
    ADMINSERVICE_USERNAME: adminServiceUsername
  },
  empty(adminServicePassword) ? {} : {
    ADMINSERVICE_PASSWORD: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.adminServicePasswordUri})'
  },
  empty(entraClientSecret) ? {} : {
    ENTRA_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.entraClientSecretUri})'
  },
  empty(entraClientCertificatePath) ? {} : {
    ENTRA_CLIENT_CERTIFICATE_PATH: entraClientCertificatePath
  },
  empty(webServiceKind) ? {} : {
    WEBSERVICE_KIND: webServiceKind
  },
  empty(webServiceUrl) ? {} : {
    WEBSERVICE_URL: webServiceUrl
  },
  empty(webServiceSecret) ? {} : {
    WEBSERVICE_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.webServiceSecretUri})'
  },
  sessionInKeyVault ? {
    ADMINSERVICE_SESSION_SECRET_URI: keyVault.outputs.adminServiceSessionUri
  } : {},
  empty(webServiceScope) ? {} : {
    WEBSERVICE_SCOPE: webServiceScope
  },
  empty(tlsCaBundle) ? {} : {
    TLS_CA_BUNDLE: tlsCaBundle
  },
  relayPath ? {
    SITE_DB_RELAY_NAMESPACE: siteDbRelay.outputs.namespaceHost
    SITE_DB_RELAY_PATH: siteDbRelay.outputs.hybridConnectionName
    SITE_DB_RELAY_LISTENER: siteDbRelayListener
    SITE_DB_RELAY_PORT_NAME: siteDbRelayPortName
    SITE_DB_RELAY_CLIENT_ID: identity.outputs.clientId
  } : {}
)

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-cmremediate-${resourceToken}'
    planName: 'plan-cmremediate-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    hostingPlan: hostingPlan
    elasticPremiumSku: elasticPremiumSku
    maximumInstanceCount: maximumInstanceCount
    workerThreadCount: workerThreadCount
    instanceMemoryMB: instanceMemoryMB
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: 'app-package'
    appInsightsConnectionString: monitoring.outputs.connectionString
    integrationSubnetId: integrationSubnetId
    vnetIntegration: vnetIntegration
    appSettings: union(alwaysSet, setWhenGiven)
  }
}

// azd reads these into the environment (.azure/<env>/.env); the deployment guide uses them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${app.outputs.defaultHostName}'
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
