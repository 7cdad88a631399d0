// What an operator watches for months: a workbook over the app's custom metrics and
// log alert rules, each query from a JSON file beside main.bicep (infra/workbook.json,
// infra/alerts.json) that tests/infra checks against the metrics the code emits.

@description('Resource ID of the Application Insights component the app sends telemetry to.')
param applicationInsightsId string

@description('Azure region.')
param location string

@description('Tags of every resource.')
param tags object

@description('E-mail address the alerts go to; empty: the rules fire without notifying anyone (see them under Alerts in the portal).')
param alertEmail string

var alerts = loadJsonContent('../alerts.json')
var notify = !empty(alertEmail)

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: 'ag-cmremediate-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cmremediate'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in alerts: {
  name: 'cmremediate-${alert.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    evaluationFrequency: alert.evaluationFrequency
    windowSize: alert.windowSize
    scopes: [
      applicationInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: alert.timeAggregation
          metricMeasureColumn: alert.measure
          operator: alert.operator
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        operators.id
      ] : []
    }
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(applicationInsightsId, 'cm-remediate operations workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'cm-remediate operations'
    category: 'workbook'
    serializedData: loadTextContent('../workbook.json')
    sourceId: applicationInsightsId
  }
}

output workbookId string = workbook.id
