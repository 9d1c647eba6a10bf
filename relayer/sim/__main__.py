"""`python -m relayer.sim`: run the exchange simulator until SIGINT or SIGTERM.

Settings come from the environment (SIM_HOST, SIM_PORT, SIM_TICKS_PER_SEC, SIM_SEED,
SIM_FRAMES_PER_MESSAGE, SIM_REJECT_TOPICS, SIM_ERROR_RECEIPT_IDS, RELAYER_TOPIC_TEMPLATE,
LOG_LEVEL). The topic template is read from the relayer's variable on purpose, so one
environment file configures both ends alike.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relayer.bus import TopicTemplate
from relayer.sim.server import DEFAULT_TOPIC_TEMPLATE, SimServer

log = logging.getLogger("relayer.sim")

EXIT_PORT_IN_USE = 2


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    sim_host: str = "127.0.0.1"
    sim_port: Annotated[int, Field(ge=0, le=65535)] = 8765
    sim_ticks_per_sec: Annotated[float, Field(ge=0)] = 20.0
    sim_seed: int | None = None
    sim_frames_per_message: Annotated[int, Field(ge=1)] = 1
    # Codes or topics whose SUBSCRIBE is refused with an ERROR (then the connection is closed),
    # to play an upstream that refuses a topic (docs/RELAYER.md, "Rejected topics").
    sim_reject_topics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sim_error_receipt_ids: bool = True
    relayer_topic_template: str = DEFAULT_TOPIC_TEMPLATE
    log_level: str = "INFO"

    @field_validator("sim_reject_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("relayer_topic_template")
    @classmethod
    def _template_has_code(cls, value: str) -> str:
        if value.count("{code}") != 1:
            raise ValueError("RELAYER_TOPIC_TEMPLATE must contain {code} exactly once")
        return value

    @model_validator(mode="after")
    def _expand_reject_topics(self) -> Self:
        """Bare codes become topics of the template (a typo fails at start, not silently)."""
        template = TopicTemplate(self.relayer_topic_template)
        self.sim_reject_topics = [template.topic(item) for item in self.sim_reject_topics]
        return self


async def serve_until_signalled(settings: SimSettings) -> None:
    sim = SimServer(
        settings.sim_host,
        settings.sim_port,
        ticks_per_sec=settings.sim_ticks_per_sec,
        seed=settings.sim_seed,
        topic_template=settings.relayer_topic_template,
        frames_per_message=settings.sim_frames_per_message,
    )
    sim.reject_topics = set(settings.sim_reject_topics)
    sim.error_receipt_ids = settings.sim_error_receipt_ids
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        await stop.wait()
        log.info("stopping the exchange simulator")


def main() -> int:
    settings = SimSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve_until_signalled(settings))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error(
            "cannot listen on %s:%d: the port is in use (set SIM_PORT to a free port)",
            settings.sim_host,
            settings.sim_port,
        )
        return EXIT_PORT_IN_USE
    return 0


if __name__ == "__main__":
    sys.exit(main())
