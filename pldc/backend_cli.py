"""Command-line options that choose the student backend, and the factory that loads it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pldc.errors import UsageError

if TYPE_CHECKING:
    from pldc.backend import StudentBackend

BACKENDS = ("transformers", "openai", "gemini")
# Options that only the openai backend reads; their defaults are None so that an explicit use is detectable.
OPENAI_OPTIONS = ("base_url", "api_key_env", "concurrency", "request_timeout")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend`` and the options of the OpenAI-compatible backend to ``parser``."""
    from pldc.openai_backend import DEFAULT_API_KEY_ENV, DEFAULT_CONCURRENCY, DEFAULT_REQUEST_TIMEOUT

    group = parser.add_argument_group("student backend")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="transformers",
        help="run the student in-process with transformers (default), call an OpenAI-compatible server, "
        "or call Gemini (answers constrained to the labels; --scoring generate)",
    )
    group.add_argument(
        "--base-url",
        help="openai: the server's API root, such as http://127.0.0.1:8000/v1; gemini: another API endpoint",
    )
    group.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"openai backend: environment variable that holds the API key (default {DEFAULT_API_KEY_ENV})",
    )
    group.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"openai backend: requests in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help=f"openai backend: seconds to wait for a connection or response data (default {DEFAULT_REQUEST_TIMEOUT:g})",
    )


def check_backend_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for backend options that do not fit together; needs no network or model."""
    from pldc.embedded import EMBEDDED_NAME

    if args.backend == "gemini":
        given = [name for name in OPENAI_OPTIONS if name != "base_url" and getattr(args, name) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise UsageError(f"{flags} applies only to --backend openai")
        if args.model == EMBEDDED_NAME:
            raise UsageError("--backend gemini needs --model NAME, a Gemini model id such as gemini-2.5-flash")
        if getattr(args, "scoring", "generate") == "logprob":
            raise UsageError("Gemini returns no label log-probabilities; pass --scoring generate or --scoring cot")
        return
    if args.backend != "openai":
        given = [name for name in OPENAI_OPTIONS if getattr(args, name) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{flags} {verb} only to --backend openai")
        return
    if args.base_url is None:
        raise UsageError("--backend openai needs --base-url, such as http://127.0.0.1:8000/v1")
    if args.model == EMBEDDED_NAME:
        raise UsageError("--backend openai needs --model NAME, the model name the server serves")
    if getattr(args, "no_prefix_cache", False):
        raise UsageError("--no-prefix-cache applies only to --backend transformers")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.request_timeout is not None and not args.request_timeout > 0:
        raise UsageError("--request-timeout must be a positive number of seconds")


def load_backend(args: argparse.Namespace, labels: Sequence[str] = ()) -> StudentBackend:
    """Load the backend that ``args`` selects, after checking that its options fit together.

    ``labels`` are the task's labels, which the Gemini backend constrains its answers to.
    """
    check_backend_arguments(args)
    if args.backend == "gemini":
        from pldc.cache import CacheMode, CallCache
        from pldc.gemini import GeminiClient, GeminiSettings, GeminiStudent

        # evaluate() caches every answer itself, so the client does not keep a second copy.
        client = GeminiClient(GeminiSettings(model=args.model, base_url=args.base_url), CallCache(mode=CacheMode.OFF))
        return GeminiStudent(client, labels)
    if args.backend != "openai":
        from pldc.student import load_student

        return load_student(args.model, batch_size=args.batch_size)

    from pldc.openai_backend import (
        DEFAULT_API_KEY_ENV,
        DEFAULT_CONCURRENCY,
        DEFAULT_REQUEST_TIMEOUT,
        OpenAIBackend,
    )

    backend = OpenAIBackend(
        args.base_url,
        args.model,
        api_key_env=args.api_key_env or DEFAULT_API_KEY_ENV,
        concurrency=args.concurrency if args.concurrency is not None else DEFAULT_CONCURRENCY,
        request_timeout=args.request_timeout if args.request_timeout is not None else DEFAULT_REQUEST_TIMEOUT,
    )
    if not backend.supports_logprobs and getattr(args, "scoring", "logprob") == "logprob" and not args.no_calibration:
        raise UsageError(
            f"{backend.name} returns no log-probabilities (scoring '{backend.scoring}'), so content-free "
            "calibration cannot run; pass --no-calibration, or use --scoring generate"
        )
    return backend
