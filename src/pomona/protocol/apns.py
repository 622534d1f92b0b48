"""APNs push-certificate facts (Apple's MDM push certificates name their topic in the subject UID).

https://developer.apple.com/documentation/devicemanagement/implementing-device-management
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

MDM_TOPIC_PREFIX = "com.apple.mgmt."


def push_topic_of(cert: x509.Certificate) -> str | None:
    """The topic an MDM push certificate is for: its subject UID, or None when it has none."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def is_mdm_topic(topic: str | None) -> bool:
    return topic is not None and topic.startswith(MDM_TOPIC_PREFIX) and len(topic) > len(MDM_TOPIC_PREFIX)
