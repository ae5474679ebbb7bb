"""What ``bse-predict services up`` says when a service dies while starting."""

from __future__ import annotations

from pathlib import Path

import pytest

from bse_predict.services.local_service import LocalService, ServicesError, start_services


def _dying_service(home: Path, script: str) -> LocalService:
    return LocalService(
        name="dying",
        host="localhost",
        port=29_999,
        extra_ports=(),
        home=home,
        log_path=home / "dying.log",
        pid_path=home / "dying.pid",
        cmdline_marker="dying-service-marker",
        probe=lambda: None,
        prepare=lambda progress: ["sh", "-c", script, "dying-service-marker"],
    )


def test_the_first_error_in_the_log_is_named_on_the_first_line(tmp_path: Path) -> None:
    script = (
        "echo '[t0] INFO starting'; "
        "echo '[t1] ERROR Exiting Kafka due to fatal exception: Address already in use'; "
        "echo '[t2] INFO shut down completely'"
    )
    with pytest.raises(ServicesError) as raised:
        start_services([_dying_service(tmp_path, script)], progress=lambda line: None, timeout_s=30)
    first_line = str(raised.value).splitlines()[0]
    assert "dying exited during start-up" in first_line
    assert "first error: [t1] ERROR Exiting Kafka due to fatal exception: Address already in use" in first_line
    assert "last log line: [t2] INFO shut down completely" in first_line


def test_a_log_without_errors_names_its_last_line(tmp_path: Path) -> None:
    with pytest.raises(ServicesError) as raised:
        start_services([_dying_service(tmp_path, "echo 'just stopped'")], progress=lambda line: None, timeout_s=30)
    message = str(raised.value)
    assert "first error" not in message
    assert "last log line: just stopped" in message
