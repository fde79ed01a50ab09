"""The one exception family for mistakes a user can cause (bad file, bad flag, missing checkpoint).

Entry points catch `UserError` and print its message on one line with a non-zero exit status;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """An error caused by the user's input; its message says what is wrong and how to fix it."""
