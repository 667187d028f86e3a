"""Where the project's shipped files live: engine configs, profiles, suites and their waivers."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUITES_DIR = PROJECT_ROOT / "suites"
DEFAULT_WAIVERS = SUITES_DIR / "waivers.yaml"
ENGINE_CONFIGS_DIR = PROJECT_ROOT / "engine_configs"
PROFILES_DIR = PROJECT_ROOT / "fixtures" / "profiles"
