"""Categories, severities and the validated results of the two classification tiers."""

import dataclasses
import enum
from typing import Optional


class Category(str, enum.Enum):
    RATE_LIMIT = "RATE_LIMIT"
    AUTHENTICATION = "AUTHENTICATION"
    VALIDATION = "VALIDATION"
    EXTERNAL_API = "EXTERNAL_API"
    INFRASTRUCTURE = "INFRASTRUCTURE"
    LOGIC_ERROR = "LOGIC_ERROR"
    UNKNOWN = "UNKNOWN"


class Severity(str, enum.Enum):
    P0_CRITICAL = "P0_CRITICAL"
    P1_HIGH = "P1_HIGH"
    P2_MEDIUM = "P2_MEDIUM"
    P3_LOW = "P3_LOW"

    @property
    def rank(self) -> int:
        """0 for P0_CRITICAL up to 3 for P3_LOW."""
        return int(self.value[1])


RULES = "rules"

MAX_SUMMARY_CHARS = 240
MAX_ROOT_CAUSE_WORDS = 50
MAX_ACTION_WORDS = 30


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token counts from a provider reply's `usage` object."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(frozen=True)
class Classification:
    """Category, severity and summary of one event, and what produced them."""

    category: Category
    severity: Severity
    summary: str
    classifier: str
    usage: Usage = Usage()
    reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DeepAnalysis:
    """Root cause and recommended action from the strong model."""

    root_cause: str
    recommended_action: str
    classifier: str
    usage: Usage = Usage()
