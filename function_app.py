"""cm-remediate function app: registers the trigger blueprints, nothing else.

Nothing here reads or validates settings: the worker imports this module to index the
functions, and an exception here would hide every one of them ("0 functions found"),
the health endpoint included. Settings and rules are checked on first use instead:
health answers 503 naming every problem, and each timer or queue invocation fails
with the same error until the configuration is fixed.
"""

import azure.functions as func

from triggers.expiry import bp as expiry_blueprint
from triggers.export import bp as export_blueprint
from triggers.health import bp as health_blueprint
from triggers.remediation import bp as remediation_blueprint

app = func.FunctionApp()
app.register_functions(export_blueprint)
app.register_functions(remediation_blueprint)
app.register_functions(health_blueprint)
app.register_functions(expiry_blueprint)
