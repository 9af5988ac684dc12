"""Mask secrets and personal data in error text before it is stored or sent to a provider.

Each pattern replaces a match with a bracketed marker such as `[email]`, so a
reader and the model still see that a value was there. User ids become a short
stable hash so repeats stay recognisable without the id itself.
"""

import hashlib
import ipaddress
import re
from typing import Any

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
# Matches `password=x`, `password: x` and the quoted forms of dict reprs and JSON.
_KEY_VALUE_PASSWORD = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|secret|api_key|apikey|access_token|token)(?P<sep>['\"]?\s*[=:]\s*['\"]?)"
    r"(?P<value>[^\s&;,'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}")
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,}|hf_[A-Za-z0-9]{30,})"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?![\d.])")
# Candidates only: ipaddress decides, so times such as 12:30:45 stay untouched.
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")
# Card numbers as printed: 13 to 19 digits in one run, 4-4-4-4 groups, or Amex 4-6-5.
_CARD = re.compile(
    r"(?<![\d\-])(?:\d{13,19}|\d{4}([ \-])\d{4}\1\d{4}\1\d{4}|\d{4}([ \-])\d{6}\2\d{5})(?![\d\-])"
)
_PHONE = re.compile(r"(?<![\w.])\+\d{1,3}[ \-]?\(?\d{1,4}\)?(?:[ \-]?\d{2,4}){2,4}(?![\w.])")
_USER_ID = re.compile(r"(?i)\b(?P<key>user[_ ]?id|uid|customer[_ ]?id|account[_ ]?id)(?P<sep>\s*[=:#]?\s*)(?P<value>[A-Za-z0-9_\-]{2,64})")


def _mask_ipv6(match: re.Match) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[ip]"


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2 == 1:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_valid(digits):
        return "[card]"
    return match.group(0)


def stable_hash(value: str) -> str:
    """Return a short hash that is the same for the same value in every process."""
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]


def _mask_user_id(match: re.Match) -> str:
    return f"{match.group('key')}{match.group('sep')}user-{stable_hash(match.group('value'))}"


_FOUR_DIGITS = re.compile(r"\d{4}")
_API_KEY_PREFIXES = ("sk-", "AKIA", "AIza", "gh", "xox", "hf_")
_KEY_WORDS = ("password", "passwd", "pwd", "secret", "api_key", "apikey", "access_token", "token")


def scrub_text(text: str) -> str:
    """Return `text` with secrets and personal data masked."""
    if not text:
        return text
    if not text.isascii():
        # Case-insensitive patterns also match non-ASCII letters (e.g. the
        # Kelvin sign for "k"), so the ASCII pre-checks below are not exact.
        return _scrub_all(text)

    # Each pattern runs only when a substring it needs to match is present.
    # Most error text lacks most of them, and `in` costs far less than a
    # regex scan. Checks see the text as the previous steps left it.
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(_mask_url_password, text)
    if "=" in text or ":" in text:
        lower = text.lower()
        if any(word in lower for word in _KEY_WORDS):
            text = _KEY_VALUE_PASSWORD.sub(_mask_key_value, text)
    lower = text.lower()
    if "bearer" in lower or "basic" in lower:
        text = _BEARER.sub(_mask_bearer, text)
    if "eyJ" in text:
        text = _JWT.sub("[jwt]", text)
    if any(prefix in text for prefix in _API_KEY_PREFIXES):
        text = _API_KEY.sub("[api-key]", text)

    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if "." in text:
        text = _IPV4.sub("[ip]", text)
    if text.count(":") >= 2:
        text = _IPV6_CANDIDATE.sub(_mask_ipv6, text)
    if _FOUR_DIGITS.search(text):
        text = _CARD.sub(_mask_card, text)
    if "+" in text:
        text = _PHONE.sub("[phone]", text)
    if "id" in text.lower():
        text = _USER_ID.sub(_mask_user_id, text)
    return text


def _mask_url_password(match: re.Match) -> str:
    return f"{match.group('scheme')}{match.group('user')}:[password]@"


def _mask_key_value(match: re.Match) -> str:
    return f"{match.group('key')}{match.group('sep')}[secret]"


def _mask_bearer(match: re.Match) -> str:
    return f"{match.group(1)} [token]"


def _scrub_all(text: str) -> str:
    """Apply every pattern in order, with no pre-check."""
    text = _URL_PASSWORD.sub(_mask_url_password, text)
    text = _KEY_VALUE_PASSWORD.sub(_mask_key_value, text)
    text = _BEARER.sub(_mask_bearer, text)
    text = _JWT.sub("[jwt]", text)
    text = _API_KEY.sub("[api-key]", text)
    text = _EMAIL.sub("[email]", text)
    text = _IPV4.sub("[ip]", text)
    text = _IPV6_CANDIDATE.sub(_mask_ipv6, text)
    text = _CARD.sub(_mask_card, text)
    text = _PHONE.sub("[phone]", text)
    text = _USER_ID.sub(_mask_user_id, text)
    return text


def scrub_value(value: Any) -> Any:
    """Scrub every string inside nested dicts and lists; other values pass unchanged."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: scrub_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_value(item) for item in value]
    return value
