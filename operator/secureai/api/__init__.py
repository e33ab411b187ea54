"""API models: the single source of truth for the CRDs and the cluster policy."""

from secureai.api.base import API_VERSION, GROUP, VERSION
from secureai.api.kinds import (
    KINDS,
    SecureInferenceService,
    SecureInferenceServiceSpec,
    SecureTrainingJob,
    SecureTrainingJobSpec,
    Workload,
    parse_workload,
)
from secureai.api.policy import Policy
from secureai.api.status import CONDITION_TYPES, Condition, WorkloadStatus

__all__ = [
    "API_VERSION",
    "CONDITION_TYPES",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "Policy",
    "SecureInferenceService",
    "SecureInferenceServiceSpec",
    "SecureTrainingJob",
    "SecureTrainingJobSpec",
    "Workload",
    "WorkloadStatus",
    "parse_workload",
]
