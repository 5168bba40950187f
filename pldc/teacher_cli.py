"""Command-line options that choose the teacher model, and the factory that builds it.

Every command that asks a teacher (``pldc distill extract``, ``build --merge teacher``,
``refine``) takes the same options, added by :func:`add_teacher_arguments`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pldc.gemini import DEFAULT_TEACHER_MODEL, THINKING_LEVELS

if TYPE_CHECKING:
    from pldc.cache import CallCache
    from pldc.gemini import GeminiSettings
    from pldc.teacher import Teacher


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the teacher options and the call cache options to ``parser``."""
    teacher = parser.add_argument_group("teacher")
    teacher.add_argument(
        "--model", default=DEFAULT_TEACHER_MODEL, help=f"Gemini model (default {DEFAULT_TEACHER_MODEL})"
    )
    teacher.add_argument(
        "--thinking-budget", type=int, help="thinking tokens per answer: -1 dynamic, 0 off (default: the model's)"
    )
    teacher.add_argument(
        "--thinking-level", choices=THINKING_LEVELS, help="thinking level of Gemini 3 models (default: the model's)"
    )
    teacher.add_argument("--temperature", type=float, help="sampling temperature (default: the model's)")
    teacher.add_argument("--workers", type=int, default=4, help="requests in flight at once (default 4)")
    teacher.add_argument("--max-attempts", type=int, default=5, help="requests per call on HTTP 429/5xx (default 5)")
    teacher.add_argument("--max-reasks", type=int, default=2, help="re-asks after an invalid answer (default 2)")
    teacher.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request (default 300)")
    teacher.add_argument(
        "--base-url", help="Gemini API endpoint (default: GOOGLE_GEMINI_BASE_URL, else Google's public endpoint)"
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the call cache")
    cache.add_argument("--refresh", action="store_true", help="ask the teacher again and overwrite cached answers")


def gemini_settings(args: argparse.Namespace) -> GeminiSettings:
    """Build the Gemini settings that the teacher options give."""
    from pldc.gemini import GeminiSettings

    return GeminiSettings(
        model=args.model,
        thinking_budget=args.thinking_budget,
        thinking_level=args.thinking_level,
        temperature=args.temperature,
        max_attempts=args.max_attempts,
        max_reasks=args.max_reasks,
        timeout=args.timeout,
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
    """Build the teacher that the options select."""
    from pldc.gemini import GeminiClient

    return GeminiClient(gemini_settings(args), cache)
