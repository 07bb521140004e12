"""The reference files made from the code (config/*.yaml, ...) are what the code makes now."""

from dares_ros.tools.reference import COMMAND, ROOT, reference_files


def test_reference_files_are_the_ones_the_code_makes():
    stale = [str(path) for path, text in reference_files().items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text() != text]
    assert not stale, f"{', '.join(stale)} differ from what the code makes: run `{COMMAND}` and commit them"
