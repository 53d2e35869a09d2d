"""Annotation: getting people's labels in and out. `files` (Label Studio tasks JSON and
CSV out, Label Studio exports and CSV in), `label_studio` (a live Label Studio through
its SDK), `answers` (answers into the label log, quarantine, agreement), `simulated`
(the embedded default's simulated annotator)."""
