"""The errors a user can meet.

Every mistake a user can make (a bad path, a config typo, an unknown criterion)
raises a :class:`ReidError` whose message is one sentence naming the file, key or
value and saying what to do. The command-line entry points print it as
``error: <message>`` and exit non-zero; ``--debug`` shows the traceback.

Example::

    raise DatasetError(f"{root}: no bounding_box_train/ folder; point data.root at "
                       "the folder that holds it or at its parent holding Market-1501-v15.09.15/")
"""


class ReidError(Exception):
    """Base class: a problem the user can fix; the message is shown as is."""


class ConfigError(ReidError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class DatasetError(ReidError):
    """A dataset root, split, file name or image that cannot be used."""


class CheckpointError(ReidError):
    """A checkpoint that cannot be read or does not belong to this experiment."""


class RunLockedError(ReidError):
    """Another live process is training into the same run directory."""


class TrainingDivergedError(ReidError):
    """The loss became NaN or infinite."""


class OutputError(ReidError):
    """A file or folder the program must write cannot be written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what is saved and what ``--resume auto`` will redo."""


class Stopped(Exception):
    """A stop signal (SIGTERM, SIGUSR1) ended the run at a step boundary, its checkpoint written; the message
    says where. Entry points exit with :data:`reid.cli.EXIT_STOPPED`; a process with nothing to say (a
    torchrun rank other than 0) carries an empty message.
    """
