"""Engine state the UI and tests can read: last error, warnings, per-frame timings."""
LAST_ERROR: str = ""
ERRORS: list = []  # every error message of this session, newest last
WARNINGS: list = []
FRAMES: list = []  # (frame, timings) of recent renders (bounded)
STOP_REQUESTED: bool = False  # Ctrl+C in `python -m neural_avatar render`: no frame starts after it


def record_error(msg: str) -> None:
    global LAST_ERROR
    LAST_ERROR = msg
    ERRORS.append(msg)
    del ERRORS[:-100]


def record_warning(msg: str) -> None:
    print(f"Neural Avatar warning: {msg}")
    WARNINGS.append(msg)
    del WARNINGS[:-100]


def record_frame(frame: int, timings: dict) -> None:
    FRAMES.append((frame, dict(timings)))
    del FRAMES[:-1000]


def clear_error() -> None:
    global LAST_ERROR
    LAST_ERROR = ""
