"""dispatch_config.json and the user config: the model of every key (``model.py``), loading
both files with the origin of each value (``loading.py``), plain messages and the schema
(``messages.py``), and writing settings (``editing.py``).

Every key has a default, so ``{}`` is a valid file. Unknown keys are refused with the closest
valid name, wrong types name the key, the value and what was expected, and invalid JSON names
the line and column. The user config (``config.json`` in
``platformdirs.user_config_dir("localdispatch")``, or ``$LOCALDISPATCH_USER_CONFIG``) has the
same keys and is read under the repository's file, which wins key by key.
"""

from __future__ import annotations

from localdispatch.config.editing import (
    is_machine_setting as is_machine_setting,
)
from localdispatch.config.editing import (
    parse_value as parse_value,
)
from localdispatch.config.editing import (
    set_values as set_values,
)
from localdispatch.config.editing import (
    shell_word as shell_word,
)
from localdispatch.config.loading import (
    find_config as find_config,
)
from localdispatch.config.loading import (
    load_config as load_config,
)
from localdispatch.config.loading import (
    repository_top as repository_top,
)
from localdispatch.config.loading import (
    user_config_keys as user_config_keys,
)
from localdispatch.config.loading import (
    user_config_path as user_config_path,
)
from localdispatch.config.messages import (
    parse_config as parse_config,
)
from localdispatch.config.messages import (
    reference_markdown as reference_markdown,
)
from localdispatch.config.messages import (
    schema_text as schema_text,
)
from localdispatch.config.model import (
    CONFIG_FILENAME as CONFIG_FILENAME,
)
from localdispatch.config.model import (
    LAUNCHERS as LAUNCHERS,
)
from localdispatch.config.model import (
    MACHINE_KEYS as MACHINE_KEYS,
)
from localdispatch.config.model import (
    PLACEHOLDERS as PLACEHOLDERS,
)
from localdispatch.config.model import (
    REPOSITORY_KEYS as REPOSITORY_KEYS,
)
from localdispatch.config.model import (
    SCHEMA_REF as SCHEMA_REF,
)
from localdispatch.config.model import (
    USER_CONFIG_ENV as USER_CONFIG_ENV,
)
from localdispatch.config.model import (
    Config as Config,
)
from localdispatch.config.model import (
    default_ollama_host as default_ollama_host,
)
from localdispatch.config.model import (
    is_loopback as is_loopback,
)
from localdispatch.config.model import (
    normalize_host as normalize_host,
)
from localdispatch.config.model import (
    split_command_string as split_command_string,
)
