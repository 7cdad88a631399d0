"""cm-remediate function app: registers the trigger blueprints, nothing else.

Settings and rules are validated here, at start: a malformed one stops the app with
a message that names it, instead of failing on the first timer tick.
"""

import azure.functions as func

from shared.runtime import get_runtime
from triggers.export import bp as export_blueprint
from triggers.health import bp as health_blueprint
from triggers.remediation import bp as remediation_blueprint

get_runtime()

app = func.FunctionApp()
app.register_functions(export_blueprint)
app.register_functions(remediation_blueprint)
app.register_functions(health_blueprint)
