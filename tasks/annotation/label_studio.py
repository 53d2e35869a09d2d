"""A live Label Studio, through `label-studio-sdk` (`pip install 'semilabel[labelstudio]'`):
create or reuse the project, push one task per annotation request, pull the answers.

The project is found by its title (`label_studio.project`) and made, if missing, with a
single-choice image-classification config built from `taxonomy.classes`. The API token
is read from the environment variable `label_studio.api_key_env` names; it is never in
a config file. Annotators are named by their email (or username) from the server's user
directory, not by Label Studio's user ids.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from configs.redact import redact_text
from configs.sampling import LabelStudioConfig
from tasks.annotation.answers import Answer, Rejected
from tasks.annotation.files import TaskInput, labeling_config, parse_label_studio_export, task_json

log = logging.getLogger(__name__)

IMPORT_BATCH = 500  # tasks per import call (each carries its image as a data URI)


class LabelStudioError(RuntimeError):
    """Label Studio cannot be reached or refused a call; the message says what to check."""


@dataclass
class LabelStudio:
    url: str
    client: Any  # label_studio_sdk.LabelStudio

    @classmethod
    def connect(cls, cfg: LabelStudioConfig) -> LabelStudio:
        try:
            from label_studio_sdk import LabelStudio as Client
        except ImportError as exc:
            raise LabelStudioError(
                "sampling.mode=label_studio needs the Label Studio SDK: "
                "pip install 'semilabel[labelstudio]'"
            ) from exc
        token = os.environ.get(cfg.api_key_env)
        if not token:
            raise LabelStudioError(
                f"no Label Studio API token: set the environment variable {cfg.api_key_env} "
                "(Label Studio: Account & Settings -> Access Token)"
            )
        url = cfg.url.rstrip("/")
        return cls(url, Client(base_url=url, api_key=token))

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the SDK raises ApiError, httpx errors, ...
            raise LabelStudioError(  # the URL, and the SDK's message, may carry user info
                redact_text(f"Label Studio at {self.url} failed while {what}: {exc}")
            ) from exc

    def ensure_project(self, title: str, classes: tuple[str, ...]) -> int:
        """The id of the project titled `title`, made if missing."""
        for project in self._call("listing projects", self.client.projects.list, title=title):
            if project.title == title:
                return int(project.id)
        project = self._call(
            "creating the project",
            self.client.projects.create,
            title=title,
            label_config=labeling_config(classes),
        )
        log.info("created Label Studio project %r (id %s)", title, project.id)
        return int(project.id)

    def push(self, project: int, tasks: list[TaskInput]) -> list[int]:
        """Import one task per request; returns the new task ids."""
        ids: list[int] = []
        for i in range(0, len(tasks), IMPORT_BATCH):
            batch = [task_json(t) for t in tasks[i : i + IMPORT_BATCH]]
            resp = self._call(
                "importing tasks",
                self.client.projects.import_tasks,
                id=project,
                request=batch,
                return_task_ids=True,
            )
            ids += list(getattr(resp, "task_ids", None) or [])
        return ids

    def users(self) -> dict[int, str]:
        """user id -> email (or username, where the email is blank)."""
        return {
            int(u.id): name
            for u in self._call("listing users", self.client.users.list)
            if u.id is not None and (name := (u.email or u.username or "").strip())
        }

    def export(self, project: int) -> list[dict]:
        """Every task of the project with its annotations (Label Studio's JSON export)."""
        chunks = self._call(
            "exporting the project",
            self.client.projects.exports.download_sync,
            id=project,
            export_type="JSON",
            download_all_tasks=True,
        )
        return json.loads(b"".join(chunks))

    def pull(self, project: int) -> tuple[list[Answer], list[Rejected], int]:
        """The project's answers, annotators named by email (or username)."""
        return parse_label_studio_export(
            self.export(project), f"label-studio project {project}", users=self.users()
        )
