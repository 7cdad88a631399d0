<#
.SYNOPSIS
    Raises the ConfigMgr generic status message (ID 39997) that cm-remediate turns into
    remediation collection membership.

.DESCRIPTION
    Run this script as a task sequence step on a ConfigMgr client. It asks the local
    ConfigMgr client to raise a generic status message through the COM object
    Microsoft.SMS.Event: EventType SMS_GenericStatusMessage_Info (message ID 39997),
    Attribute403 = GenericMsg_SeeInsertionStrings, and the insertion strings

        InsertionString1  -Type    the message type, e.g. MsgType_Office365Upgrade
        InsertionString2  -Value   the fact, e.g. projectInstalled
        InsertionString3  -Detail  optional free text

    The client forwards the message to its management point (through the cloud
    management gateway when it is on the internet). cm-remediate reads it from the site
    database and applies every rule in its rules.json whose "match" equals these
    strings. Only -Severity Info (39997) messages are acted on by cm-remediate.

    Every value is checked before anything is sent: at most 255 characters (the limit
    of an insertion string) and a safe character set (Type and Value: letters, digits,
    underscore, period, hyphen; Detail: also colon and space). The checks are in the
    script body rather than in parameter attributes so that every refusal is written
    to the log and ends with exit code 1.

    After a successful send, inside a task sequence, the script sets the task sequence
    variable CMRemediate_<Type>_<Value>_Sent to "True" (any character of Type or Value
    that a variable name cannot hold, i.e. the period, becomes an underscore). A step
    condition can test it so that a later step or a rerun does not send the same fact
    again. Resending is harmless to cm-remediate, only wasteful.

    Supports -WhatIf and -Confirm: with -WhatIf the message is prepared (which proves
    that the COM object is available) but not submitted, and no variable is set.

    Works with Windows PowerShell 5.1 and PowerShell 7. Keep this file ASCII: Windows
    PowerShell 5.1 reads a file without byte order mark in the ANSI code page.

.PARAMETER Type
    Message type, sent as InsertionString1, e.g. MsgType_Office365Upgrade. Required.
    1 to 255 characters from A-Z a-z 0-9 _ . -

.PARAMETER Value
    The fact to report, sent as InsertionString2, e.g. projectInstalled, visioInstalled,
    roomPluginInstalled. Required. 1 to 255 characters from A-Z a-z 0-9 _ . -

.PARAMETER Detail
    Optional free text, sent as InsertionString3 when not empty, e.g. a product version.
    At most 255 characters from A-Z a-z 0-9 _ . - : and space. Never put secrets or
    personal data here: status messages are readable by every ConfigMgr administrator.

.PARAMETER Severity
    Info (default), Warning or Error: event type SMS_GenericStatusMessage_Info,
    _Warning or _Error, message ID 39997, 39998 or 39999. cm-remediate acts only on
    Info (39997); the other two only show up in the console.

.PARAMETER LogPath
    Folder for Send-RemediationStatusMessage.log (CMTrace format). Default: the task
    sequence log folder (_SMSTSLogPath) when running in a task sequence, else $env:TEMP.

.EXAMPLE
    Task sequence step "Run PowerShell Script", with the script in a package (or its
    content pasted under "Enter a PowerShell script"):

        Script name:       Send-RemediationStatusMessage.ps1
        Parameters:        -Type MsgType_Office365Upgrade -Value projectInstalled
        Execution policy:  Bypass
        Condition:         Task Sequence Variable Project32Installed equals "True"

.EXAMPLE
    powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File .\Send-RemediationStatusMessage.ps1 -Type MsgType_Office365Upgrade -Value visioInstalled -Detail "Visio 16.0 x86"

    The same from a "Run Command Line" step (with the package that holds the script) or
    from an elevated prompt on a test client. $LASTEXITCODE tells the result.

.EXAMPLE
    .\Send-RemediationStatusMessage.ps1 -Type MsgType_Office365Upgrade -Value roomPluginInstalled -WhatIf -Verbose

    Checks the parameters and that the ConfigMgr client's COM object is available,
    without sending anything.

.NOTES
    Exit codes:
      0  Sent: the local ConfigMgr client accepted the message (or, with -WhatIf or a
         declined -Confirm, nothing was to be sent).
      1  Invalid parameter: a value is empty, longer than 255 characters or holds a
         character outside the safe set, or -Severity is not Info, Warning or Error.
         Nothing was sent.
      2  Not a ConfigMgr client: the COM object Microsoft.SMS.Event cannot be created
         (no ConfigMgr client installed, a broken client, or Windows PE). Nothing was
         sent.
      3  Submit failed: the client did not accept the message. The client normally
         queues status messages and retries when it cannot reach a management point,
         so send early in the task sequence, before it switches from VPN to the cloud
         management gateway. The "sent" variable is not set, so a later step can retry.
      4  Unexpected error (see the log).

    Log: <LogPath>\Send-RemediationStatusMessage.log, CMTrace format, one line per step.
    Task sequence variable: CMRemediate_<Type>_<Value>_Sent = True after a send.
    Status messages are not authenticated; cm-remediate validates everything it
    receives on its side. See docs/client.md in the cm-remediate repository.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [AllowEmptyString()]
    [string]$Type,

    [Parameter(Mandatory = $true)]
    [AllowEmptyString()]
    [string]$Value,

    [Parameter()]
    [AllowEmptyString()]
    [string]$Detail = '',

    [Parameter()]
    [string]$Severity = 'Info',

    [Parameter()]
    [string]$LogPath = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# The validation patterns. tests/client/test_client_script.py reads them from this file
# and evaluates them with Python's re module: keep them in the common subset of .NET and
# Python regular expressions, one single-quoted string each.
$IdentifierPattern = '^[A-Za-z0-9_.-]{1,255}$'
$DetailPattern = '^[A-Za-z0-9_.: -]{1,255}$'
$MaxInsertionStringLength = 255
# Task sequence variable names: letters, digits, underscore, hyphen; at most 256.
$VariableNameUnsafe = '[^A-Za-z0-9_-]'
$MaxVariableNameLength = 256

$Component = 'Send-RemediationStatusMessage'
$ScriptFileName = 'Send-RemediationStatusMessage.ps1'
$LogFileName = 'Send-RemediationStatusMessage.log'
$MaxLogBytes = 1MB

$EventTypes = @{
    'Info'    = 'SMS_GenericStatusMessage_Info'
    'Warning' = 'SMS_GenericStatusMessage_Warning'
    'Error'   = 'SMS_GenericStatusMessage_Error'
}
$MessageIds = @{
    'Info'    = 39997
    'Warning' = 39998
    'Error'   = 39999
}

$script:LogFile = $null
$script:LogFailed = $false

function Write-CMTraceLog {
    <#
    .SYNOPSIS
        Writes one CMTrace line (1 information, 2 warning, 3 error) and echoes it to the
        verbose, warning or error stream. Never throws: logging must not stop the send.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)]
        [string]$Message,

        [Parameter()]
        [ValidateSet(1, 2, 3)]
        [int]$Level = 1
    )

    switch ($Level) {
        1 { Write-Verbose -Message $Message }
        2 { Write-Warning -Message $Message }
        3 { [Console]::Error.WriteLine('ERROR: ' + $Message) }
    }

    if ($null -eq $script:LogFile -or $script:LogFailed) {
        return
    }
    try {
        $now = Get-Date
        $invariant = [System.Globalization.CultureInfo]::InvariantCulture
        # CMTrace's time zone field is the bias in minutes (UTC = local time + bias),
        # as ConfigMgr writes it: -060 for UTC+01:00, +300 for UTC-05:00.
        $offsetMinutes = [int]([System.TimeZoneInfo]::Local.GetUtcOffset($now).TotalMinutes)
        $bias = 0 - $offsetMinutes
        # One line per entry, and no text that could close the LOG[...] field early.
        $text = ($Message -replace '[\r\n]+', ' ').Replace(']LOG]!>', '] LOG]!>')
        $line = '<![LOG[{0}]LOG]!><time="{1}{2}" date="{3}" component="{4}" context="" type="{5}" thread="{6}" file="{7}">' -f @(
            $text,
            $now.ToString('HH:mm:ss.fff', $invariant),
            $bias.ToString('+000;-000;+000', $invariant),
            $now.ToString('MM-dd-yyyy', $invariant),
            $Component,
            $Level,
            [System.Threading.Thread]::CurrentThread.ManagedThreadId,
            $ScriptFileName
        )
        $encoding = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false
        [System.IO.File]::AppendAllText($script:LogFile, $line + "`r`n", $encoding)
    }
    catch {
        $script:LogFailed = $true
        Write-Warning -Message ('Cannot write the log file {0}: {1}' -f $script:LogFile, $_.Exception.Message)
    }
}

function Initialize-Log {
    <#
    .SYNOPSIS
        Creates the log folder and sets $script:LogFile; rolls a log over 1 MB to .lo_
        like ConfigMgr does. On failure the script goes on without a log file.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)]
        [string]$Folder
    )

    try {
        $fullFolder = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Folder)
        [void][System.IO.Directory]::CreateDirectory($fullFolder)
        $file = [System.IO.Path]::Combine($fullFolder, $LogFileName)
        if ([System.IO.File]::Exists($file) -and (New-Object -TypeName System.IO.FileInfo -ArgumentList $file).Length -gt $MaxLogBytes) {
            $rolled = [System.IO.Path]::ChangeExtension($file, '.lo_')
            if ([System.IO.File]::Exists($rolled)) {
                [System.IO.File]::Delete($rolled)
            }
            [System.IO.File]::Move($file, $rolled)
        }
        $script:LogFile = $file
    }
    catch {
        $script:LogFile = $null
        Write-Warning -Message ('Cannot use the log folder {0}: {1}. Going on without a log file.' -f $Folder, $_.Exception.Message)
    }
}

function Test-WholeMatch {
    <#
    .SYNOPSIS
        True when the pattern matches the whole text. A bare '$' also matches before a
        final newline (in .NET as in Python), so the match length is compared as well.
    #>
    [CmdletBinding()]
    [OutputType([bool])]
    param(
        [Parameter(Mandatory = $true)]
        [AllowEmptyString()]
        [string]$Text,

        [Parameter(Mandatory = $true)]
        [string]$Pattern
    )

    $match = [regex]::Match($Text, $Pattern, [System.Text.RegularExpressions.RegexOptions]::CultureInvariant)
    return ($match.Success -and $match.Index -eq 0 -and $match.Length -eq $Text.Length)
}

function Get-ValueProblem {
    <#
    .SYNOPSIS
        Why a value cannot be sent, or $null when it can. Never echoes the value itself:
        it may be hostile, and the log must stay readable.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory = $true)]
        [string]$Name,

        [Parameter(Mandatory = $true)]
        [AllowEmptyString()]
        [string]$Text,

        [Parameter(Mandatory = $true)]
        [string]$Pattern,

        [Parameter(Mandatory = $true)]
        [string]$Allowed
    )

    if ($Text.Length -eq 0) {
        return ('-{0} is empty.' -f $Name)
    }
    if ($Text.Length -gt $MaxInsertionStringLength) {
        return ('-{0} is {1} characters long; a status message insertion string holds at most {2}.' -f $Name, $Text.Length, $MaxInsertionStringLength)
    }
    if (-not (Test-WholeMatch -Text $Text -Pattern $Pattern)) {
        return ('-{0} holds a character outside the safe set ({1}).' -f $Name, $Allowed)
    }
    return $null
}

try {
    # --- where to log -----------------------------------------------------------------
    $tsEnvironment = $null
    try {
        $tsEnvironment = New-Object -ComObject Microsoft.SMS.TSEnvironment
    }
    catch {
        $tsEnvironment = $null
    }

    if ([string]::IsNullOrWhiteSpace($LogPath)) {
        if ($null -ne $tsEnvironment) {
            try {
                $LogPath = [string]$tsEnvironment.Value('_SMSTSLogPath')
            }
            catch {
                $LogPath = ''
            }
        }
        if ([string]::IsNullOrWhiteSpace($LogPath)) {
            $LogPath = $env:TEMP
        }
        if ([string]::IsNullOrWhiteSpace($LogPath)) {
            $LogPath = [System.IO.Path]::GetTempPath()
        }
    }
    Initialize-Log -Folder $LogPath

    $inTaskSequence = $null -ne $tsEnvironment
    Write-CMTraceLog -Message ('Starting. PowerShell {0}; running in a task sequence: {1}.' -f $PSVersionTable.PSVersion, $inTaskSequence)

    # --- validate every parameter before touching ConfigMgr ---------------------------
    $problems = New-Object -TypeName System.Collections.Generic.List[string]
    $identifierAllowed = 'letters, digits, _ . -'
    $problem = Get-ValueProblem -Name 'Type' -Text $Type -Pattern $IdentifierPattern -Allowed $identifierAllowed
    if ($null -ne $problem) { $problems.Add($problem) }
    $problem = Get-ValueProblem -Name 'Value' -Text $Value -Pattern $IdentifierPattern -Allowed $identifierAllowed
    if ($null -ne $problem) { $problems.Add($problem) }
    $hasDetail = -not [string]::IsNullOrEmpty($Detail)
    if ($hasDetail) {
        $problem = Get-ValueProblem -Name 'Detail' -Text $Detail -Pattern $DetailPattern -Allowed 'letters, digits, _ . - : and space'
        if ($null -ne $problem) { $problems.Add($problem) }
    }
    $severityName = $null
    foreach ($name in @('Info', 'Warning', 'Error')) {
        if ([string]::Equals($name, $Severity, [System.StringComparison]::OrdinalIgnoreCase)) {
            $severityName = $name
        }
    }
    if ($null -eq $severityName) {
        $problems.Add('-Severity must be Info, Warning or Error.')
    }

    if ($problems.Count -gt 0) {
        foreach ($item in $problems) {
            Write-CMTraceLog -Message ('Invalid parameter: ' + $item) -Level 3
        }
        Write-CMTraceLog -Message 'Nothing was sent. Exit code 1.' -Level 3
        exit 1
    }

    $eventType = $EventTypes[$severityName]
    $messageId = $MessageIds[$severityName]
    $description = 'status message {0} ({1}): InsertionString1={2} InsertionString2={3}' -f $messageId, $eventType, $Type, $Value
    if ($hasDetail) {
        $description += ' InsertionString3=' + $Detail
    }
    Write-CMTraceLog -Message ('Parameters are valid: ' + $description)
    if ($severityName -ne 'Info') {
        Write-CMTraceLog -Message ('-Severity {0}: cm-remediate acts only on Info (39997) messages; this one will only show in the console.' -f $severityName) -Level 2
    }

    # --- the ConfigMgr client's COM object ----------------------------------------------
    try {
        $statusEvent = New-Object -ComObject Microsoft.SMS.Event
    }
    catch {
        Write-CMTraceLog -Message ('The COM object Microsoft.SMS.Event is not available ({0}). Is the ConfigMgr client installed and healthy (this step cannot run in Windows PE)? Nothing was sent. Exit code 2.' -f $_.Exception.Message) -Level 3
        exit 2
    }
    Write-CMTraceLog -Message 'Created the COM object Microsoft.SMS.Event.'

    $statusEvent.EventType = $eventType
    [void]$statusEvent.SetProperty('Attribute403', 'GenericMsg_SeeInsertionStrings')
    [void]$statusEvent.SetProperty('InsertionString1', $Type)
    [void]$statusEvent.SetProperty('InsertionString2', $Value)
    if ($hasDetail) {
        [void]$statusEvent.SetProperty('InsertionString3', $Detail)
    }
    Write-CMTraceLog -Message 'Set EventType, Attribute403 and the insertion strings.'

    if (-not $PSCmdlet.ShouldProcess($description, 'Submit')) {
        Write-CMTraceLog -Message 'WhatIf (or declined): the message was prepared but not submitted, and no task sequence variable was set. Exit code 0.'
        exit 0
    }

    # --- send -----------------------------------------------------------------------------
    try {
        [void]$statusEvent.Submit()
    }
    catch {
        Write-CMTraceLog -Message ('Submit() failed: {0}. The local ConfigMgr client did not accept the message. The client normally queues status messages and retries when it cannot reach a management point; send early in the task sequence, before switching from VPN to the cloud management gateway. The "sent" variable was not set, so a later step can retry. Exit code 3.' -f $_.Exception.Message) -Level 3
        exit 3
    }
    Write-CMTraceLog -Message ('Submitted ' + $description + '.')

    # --- remember it for step conditions --------------------------------------------------
    if ($inTaskSequence) {
        $variableName = 'CMRemediate_{0}_{1}_Sent' -f ($Type -creplace $VariableNameUnsafe, '_'), ($Value -creplace $VariableNameUnsafe, '_')
        if ($variableName.Length -le $MaxVariableNameLength) {
            try {
                $tsEnvironment.Value($variableName) = 'True'
                Write-CMTraceLog -Message ('Set task sequence variable {0} = True.' -f $variableName)
            }
            catch {
                Write-CMTraceLog -Message ('The message was sent, but the task sequence variable {0} could not be set: {1}' -f $variableName, $_.Exception.Message) -Level 2
            }
        }
        else {
            Write-CMTraceLog -Message ('The message was sent, but no task sequence variable was set: its name would be {0} characters long, more than the {1} a task sequence variable name may have. Use shorter -Type and -Value.' -f $variableName.Length, $MaxVariableNameLength) -Level 2
        }
    }
    else {
        Write-CMTraceLog -Message 'Not running in a task sequence: no task sequence variable was set.'
    }

    Write-CMTraceLog -Message 'Done. Exit code 0.'
    Write-Output ('Sent ' + $description)
    exit 0
}
catch {
    $position = ''
    if ($null -ne $_.InvocationInfo) {
        $position = ' (line {0})' -f $_.InvocationInfo.ScriptLineNumber
    }
    Write-CMTraceLog -Message ('Unexpected error{0}: {1}. Exit code 4.' -f $position, $_.Exception.Message) -Level 3
    exit 4
}
