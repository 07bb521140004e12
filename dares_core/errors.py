"""The one exception type a user sees: a one-line message naming the thing and the fix."""


class DaresError(Exception):
    """A user-facing error; the CLI prints it as one line and exits with status 2."""


class FrameProblem(ValueError):
    """A frame that cannot (wholly) become depth: `problem` is one line naming it and the fix, `topic` the input it
    concerns (a topic, camera_info, a parameter) where the caller knows it; str() is "topic: problem". A node skips
    the frame, says so and goes on."""

    def __init__(self, problem: str, topic: str = ""):
        super().__init__(f"{topic}: {problem}" if topic else problem)
        self.topic, self.problem = topic, problem
