"""Stand-in for modules/errors.py (A1111 v1.10.1): report prints the message and the exception to stderr, as the
real one does; `reported` records the messages for tests."""
import sys
import traceback

reported = []   # stand-in only


def report(message: str, *, exc_info: bool = False) -> None:
    reported.append(message)
    print(message, file=sys.stderr)
    if exc_info:
        traceback.print_exc(file=sys.stderr)
