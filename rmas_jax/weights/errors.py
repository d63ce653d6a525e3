"""The one error type the loaders raise for bad input: its message is a single line meant for the user."""


class ModelLoadError(ValueError):
  """A model, file or tokenizer could not be loaded; the message names what and why."""
