"""The one base class of the errors that blame the user's input.

A `UserError` says, in one line, which file, field or value is wrong (a recipe field out of range, a pack file
that does not parse, a checkpoint this host does not list, an image that cannot be read, …). Every face turns only
these into a refusal: the API into a 4xx with the line as `detail`, the CLI into `tlok_workflow: error: <line>`
and exit 2, the panel into its error box. Any other exception is a fault of ours or of a library (a torch or
diffusers ValueError too): a 500 with the traceback in the server's log, a one-line "internal error" from the CLI.

A leaf module (it imports nothing), so that every layer can raise it. It derives from ValueError, as the errors it
is the base of always did, so code that caught those as ValueErrors still does.
"""


class UserError(ValueError):
    """The user's input cannot be used; the message names the file, field or value, and says why."""
