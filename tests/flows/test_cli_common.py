"""What the CLI prints: the data as it is, whatever characters it holds."""

from dataclasses import dataclass

from flows.cli_common import out, present


@dataclass
class _Result:
    decision: str = "undecided"

    def rows(self) -> list[dict]:
        return [
            {"metric": "why", "value": "cannot be decided yet (recall[eight], recall[five])"},
            {"metric": "classes", "value": "[bold]cats[/bold], dogs"},
            {"metric": "gold labels", "value": 12},
        ]


def test_square_brackets_in_class_names_and_reasons_are_printed_not_eaten():
    with out.capture() as captured:
        present("retrain", _Result())
    text = captured.get()
    assert "recall[eight], recall[five]" in text  # Rich markup would print "recall, recall"
    assert "[bold]cats[/bold], dogs" in text
    assert "retrain: undecided" in text
