"""How the tools end on a mistake that mmmpvg reports: one line, last.

A bad checkpoint, data root, PE method or option is reported by our code
with an exception whose message names the problem and what to do. Printed
as Python does, that line sits under a traceback of library frames; the
tools print it alone, last, and exit with status 1. ``--debug`` shows the
traceback. Errors raised elsewhere (library bugs, ours) keep theirs.
"""
import os.path as osp
import pickle
import sys

__all__ = ['add_debug_arg', 'reported_error', 'run_tool']

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The kinds our messages for the user are raised as; TypeError,
# AttributeError, KeyError and the like are bugs and keep their traceback.
_REPORTED_TYPES = (ValueError, RuntimeError, OSError, pickle.UnpicklingError)


def add_debug_arg(parser):
    parser.add_argument(
        '--debug',
        action='store_true',
        help='on an error mmmpvg reports, show the traceback too')
    return parser


def _raised_under(error, directories):
    """Whether the frame that raised ``error`` is in one of
    ``directories``."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    path = osp.abspath(frame.tb_frame.f_code.co_filename)
    return any(path.startswith(d + osp.sep) for d in directories)


def reported_error(error, directories=(_PACKAGE_DIR, )):
    """The exception in ``error``'s chain that code in ``directories``
    (default: the mmmpvg package) raised for the user, or None.

    The chain matters because registries re-raise: MMEngine's
    ``build_from_cfg`` raises a copy of the error with the class and file
    prepended, from inside its own frame.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _REPORTED_TYPES) and _raised_under(
                error, directories):
            return error
        error = error.__cause__ or error.__context__
    return None


def run_tool(main, argv=None):
    """``main(argv)``, ending on an error mmmpvg or the tool itself
    reported with its message as the last line (no traceback unless
    ``--debug`` is in ``argv``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tool_dir = osp.dirname(osp.abspath(main.__code__.co_filename))
    try:
        return main(argv)
    except Exception as error:  # noqa: B902  (re-raised unless reported)
        reported = None if '--debug' in argv else reported_error(
            error, (_PACKAGE_DIR, tool_dir))
        if reported is None:
            raise
        sys.stdout.flush()
        print(f'error: {reported} (--debug shows the traceback)',
              file=sys.stderr)
        raise SystemExit(1) from None
