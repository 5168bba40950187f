"""Command-line options that choose the teacher model, and the factory that builds it.

Every command that asks a teacher (``pldc distill extract``, ``build --merge teacher``,
``refine``) takes the same options, added by :func:`add_teacher_arguments`. ``--teacher``
picks Gemini, a server that speaks the OpenAI chat completions API, or a local model run
through transformers. Options that only some teachers read default to None, so that
:func:`check_teacher_arguments` can reject them with another teacher instead of ignoring them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pldc.errors import ModelError, UsageError
from pldc.gemini import DEFAULT_TEACHER_MODEL, THINKING_LEVELS

if TYPE_CHECKING:
    from pldc.cache import CallCache
    from pldc.gemini import GeminiSettings
    from pldc.teacher import Teacher

TEACHERS = ("gemini", "openai", "transformers")
# The teachers that read each option; --model, --workers and --max-reasks apply to all of them.
TEACHER_OPTIONS = {
    "thinking_budget": ("gemini",),
    "thinking_level": ("gemini",),
    "temperature": ("gemini", "openai"),
    "max_attempts": ("gemini", "openai"),
    "timeout": ("gemini", "openai"),
    "base_url": ("gemini", "openai"),
    "api_key_env": ("openai",),
    "response_format": ("openai",),
    "max_new_tokens": ("transformers",),
}
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = 300.0


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the teacher options and the call cache options to ``parser``."""
    from pldc.openai_backend import DEFAULT_API_KEY_ENV
    from pldc.openai_teacher import RESPONSE_FORMATS
    from pldc.transformers_teacher import DEFAULT_MAX_NEW_TOKENS

    teacher = parser.add_argument_group("teacher")
    teacher.add_argument(
        "--teacher",
        choices=TEACHERS,
        default="gemini",
        help="Gemini through google-genai (default), a server that speaks the OpenAI chat completions API, "
        "or a local model run through transformers",
    )
    teacher.add_argument(
        "--model",
        help=f"teacher model: a Gemini model id (default {DEFAULT_TEACHER_MODEL}); for openai the model name "
        "the server serves (required); for transformers 'embedded' (default), a model folder or a Hugging Face id "
        "in the local cache",
    )
    teacher.add_argument(
        "--thinking-budget",
        type=int,
        help="gemini: thinking tokens per answer, -1 dynamic, 0 off (default: the model's)",
    )
    teacher.add_argument(
        "--thinking-level",
        choices=THINKING_LEVELS,
        help="gemini: thinking level of Gemini 3 models (default: the model's)",
    )
    teacher.add_argument(
        "--temperature", type=float, help="gemini, openai: sampling temperature (default: the model's or server's)"
    )
    teacher.add_argument("--workers", type=int, default=4, help="requests in flight at once (default 4)")
    teacher.add_argument(
        "--max-attempts",
        type=int,
        help=f"gemini, openai: requests per call on HTTP 408, 429 or 5xx or a timeout (default {DEFAULT_MAX_ATTEMPTS})",
    )
    teacher.add_argument("--max-reasks", type=int, default=2, help="re-asks after an invalid answer (default 2)")
    teacher.add_argument(
        "--timeout", type=float, help=f"gemini, openai: seconds per HTTP request (default {DEFAULT_TIMEOUT:g})"
    )
    teacher.add_argument(
        "--base-url",
        help="gemini: API endpoint (default: GOOGLE_GEMINI_BASE_URL, else Google's public endpoint); "
        "openai: the server's API root, such as http://127.0.0.1:8000/v1 (required)",
    )
    teacher.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"openai: environment variable that contains the API key (default {DEFAULT_API_KEY_ENV}; "
        "local servers need none)",
    )
    teacher.add_argument(
        "--response-format",
        choices=RESPONSE_FORMATS,
        help="openai: send the answer schema as a strict JSON schema (default), ask for any JSON object, "
        "or send no response_format; the last two put the schema in the system message",
    )
    teacher.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help=f"transformers: tokens generated per answer at most (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the call cache")
    cache.add_argument("--refresh", action="store_true", help="ask the teacher again and overwrite cached answers")


def check_teacher_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for teacher options that do not fit ``--teacher``; needs no network or model."""
    for name, teachers in TEACHER_OPTIONS.items():
        if getattr(args, name, None) is not None and args.teacher not in teachers:
            flag = "--" + name.replace("_", "-")
            allowed = " or ".join(f"--teacher {teacher}" for teacher in teachers)
            raise UsageError(f"{flag} applies only to {allowed}, not --teacher {args.teacher}")
    if args.teacher == "openai":
        if not args.model:
            raise UsageError("--teacher openai needs --model NAME, the model name the server serves")
        if args.base_url is None:
            raise UsageError("--teacher openai needs --base-url, such as http://127.0.0.1:8000/v1")
    if args.max_reasks < 0:
        raise UsageError("--max-reasks must be 0 or more")
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")


def gemini_settings(args: argparse.Namespace) -> GeminiSettings:
    """Build the Gemini settings that the teacher options give."""
    from pldc.gemini import GeminiSettings

    return GeminiSettings(
        model=args.model or DEFAULT_TEACHER_MODEL,
        thinking_budget=args.thinking_budget,
        thinking_level=args.thinking_level,
        temperature=args.temperature,
        max_attempts=args.max_attempts if args.max_attempts is not None else DEFAULT_MAX_ATTEMPTS,
        max_reasks=args.max_reasks,
        timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        base_url=args.base_url,
    )


def open_call_cache(args: argparse.Namespace) -> CallCache:
    """Open the call cache in the mode that ``--no-cache`` and ``--refresh`` select."""
    from pldc.cache import CacheMode, CallCache

    mode = CacheMode.USE
    if args.no_cache:
        mode = CacheMode.OFF
    elif args.refresh:
        mode = CacheMode.REFRESH
    return CallCache(mode=mode)


def make_teacher(args: argparse.Namespace, cache: CallCache) -> Teacher:
    """Build the teacher that the options select, after checking that the options fit it."""
    check_teacher_arguments(args)
    if args.teacher == "openai":
        from pldc.openai_backend import DEFAULT_API_KEY_ENV
        from pldc.openai_teacher import OpenAITeacher, OpenAITeacherSettings

        settings = OpenAITeacherSettings(
            base_url=args.base_url,
            model=args.model,
            api_key_env=args.api_key_env or DEFAULT_API_KEY_ENV,
            response_format=args.response_format or "json_schema",
            temperature=args.temperature,
            max_attempts=args.max_attempts if args.max_attempts is not None else DEFAULT_MAX_ATTEMPTS,
            max_reasks=args.max_reasks,
            timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        )
        return OpenAITeacher(settings, cache)
    if args.teacher == "transformers":
        from pldc.embedded import EMBEDDED_NAME
        from pldc.transformers_teacher import (
            DEFAULT_MAX_NEW_TOKENS,
            TransformersTeacher,
            TransformersTeacherSettings,
        )

        return TransformersTeacher(
            TransformersTeacherSettings(
                model=args.model or EMBEDDED_NAME,
                max_new_tokens=args.max_new_tokens if args.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS,
                max_reasks=args.max_reasks,
            ),
            cache,
        )
    from pldc.gemini import GeminiClient

    return GeminiClient(gemini_settings(args), cache)


# ---- teacher requests through Batch API files ---------------------------------


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--export-batch`` and ``--import-batch`` for commands whose teacher can answer through batch files."""
    batch = parser.add_argument_group("batch")
    batch.add_argument(
        "--export-batch", type=Path, metavar="FILE", help="write the teacher requests without an answer; call nothing"
    )
    batch.add_argument(
        "--import-batch",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="answer teacher requests from Batch API results (repeatable)",
    )


def batch_or_live_teacher(args: argparse.Namespace, cache: CallCache) -> Teacher:
    """Build a batch teacher when ``--export-batch`` or ``--import-batch`` is given, else the live teacher."""
    from pldc.batch_teacher import BatchResults, BatchTeacher

    if args.export_batch is None and not args.import_batch:
        return make_teacher(args, cache)
    if args.teacher != "gemini":
        raise UsageError("--export-batch and --import-batch are Gemini Batch API files; use --teacher gemini")
    check_teacher_arguments(args)
    results = BatchResults()
    for path in args.import_batch:
        found = BatchResults.read(path)
        for problem in found.problems:
            print(f"pldc: {problem.render()}", file=sys.stderr)
        results.problems.extend(found.problems)
        results.failed.update(found.failed)
        results.texts.update(found.texts)
        for digest, key in found.by_digest.items():
            results.by_digest.setdefault(digest, key)
    return BatchTeacher(gemini_settings(args), cache, results)


def batch_problems(teacher: Teacher | None) -> int:
    """Warn about every imported result line that answered no request; return the count of unusable lines.

    Answers that no request used are expected after several rounds: a pair of rules asked about
    again is answered from the first answer, so they are listed but do not fail the command.
    """
    from pldc.batch_teacher import BatchTeacher

    if not isinstance(teacher, BatchTeacher):
        return 0
    for problem in teacher.unused_results():
        print(f"pldc: warning: {problem.render()}", file=sys.stderr)
    return len(teacher.invalid) + len(teacher.results.problems)


def export_pending(args: argparse.Namespace, teacher: Teacher | None, what: str, waiting: int, problems: int) -> int:
    """Write the requests that ``what`` waits for to ``--export-batch``; return the exit code."""
    from pldc.batch_teacher import BatchTeacher

    if not isinstance(teacher, BatchTeacher):
        raise ModelError(f"{what} is waiting for teacher answers; report this as a bug")
    if args.export_batch is None:
        raise ModelError(
            f"{waiting} teacher requests of {what} have no answer in the imported results; "
            "pass --export-batch FILE to write them"
        )
    written = teacher.write_export(args.export_batch)
    print(
        f"wrote {written} batch requests of {what} to {args.export_batch}; run them with the "
        "Batch API, then re-run this command with --import-batch RESULTS"
    )
    return 1 if problems else 0
