# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error type for every module: it names the field at fault and the reason."""
from __future__ import annotations


class OverlayError(Exception):
    """A problem the user can act on.

    ``field`` is the module option (dotted for sub-options, e.g. ``peer.mtu``)
    the problem is about, or None when it is about the environment.
    """

    def __init__(self, reason, field=None, **details):
        self.reason = reason
        self.field = field
        self.details = details
        super().__init__(self.message)

    @property
    def message(self):
        return "%s: %s" % (self.field, self.reason) if self.field else self.reason


def fail(module, error):
    """Report an OverlayError through Ansible, keeping the field machine-readable."""
    module.fail_json(msg=error.message, field=error.field, **error.details)


def run(module, work):
    """A module's whole run: ``work()`` returns the result; every failure becomes a clear
    fail_json, never a traceback in place of JSON. An OverlayError names its option; anything
    else (a netlink or OS error under a run, e.g. an interface that vanished) says what it was,
    with the traceback in ``exception`` for -vvv."""
    import traceback
    try:
        result = work()
    except OverlayError as e:
        fail(module, e)
        return
    except Exception as e:  # noqa: BLE001 - the last line of defence: report, do not crash
        errno_ = getattr(e, "code", None) or getattr(e, "errno", None)
        module.fail_json(msg="unexpected %s%s during the run: %s" % (
            type(e).__name__, " (errno %s)" % errno_ if errno_ else "", e), exception=traceback.format_exc())
        return
    for warning in result.pop("warnings", None) or ():  # exit_json(warnings=...) is deprecated
        module.warn(warning)
    module.exit_json(**result)
