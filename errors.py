"""Project exceptions. Pure code raises these with a message a user understands;
operators report them (``self.report({'ERROR'}, str(e))``) and the engine shows them
with ``error_set``. No bpy here."""


class NeuralAvatarError(Exception):
    """Base class: the message is shown to the user as-is."""


class BodyModelError(NeuralAvatarError):
    """A body-model file is missing, unreadable or has wrong keys/shapes."""


class MotionFileError(NeuralAvatarError):
    """A motion file (AMASS npz, …) cannot be used."""


class BundleError(NeuralAvatarError):
    """A model bundle is missing, corrupt or of another mode."""


class DatasetError(NeuralAvatarError):
    """A capture/dataset folder is incomplete or inconsistent."""


class CancelledError(NeuralAvatarError):
    """The user cancelled a render, capture or training run."""


class DependencyError(NeuralAvatarError):
    """A Python package the feature needs is not installed (torch, smplx, numpy, …).

    The message names the package and where to install it (the add-on's preferences, or the
    system package for numpy)."""


class ResourceLimitError(NeuralAvatarError):
    """A size read from a file or asked for (frames, pixels, network width) would need more
    memory than this machine can give; refused before anything is allocated."""
