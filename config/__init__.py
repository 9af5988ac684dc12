"""Settings and Celery configuration. Imports nothing else of errortriage."""

from config.errors import ConfigError, ErrortriageError
from config.settings import Settings, load_settings, mask_secret, mask_url

__all__ = ["ConfigError", "ErrortriageError", "Settings", "load_settings", "mask_secret", "mask_url"]
