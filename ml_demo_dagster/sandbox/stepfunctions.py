"""Step Functions executions that reach the sandbox's own executors.

moto runs a state machine's executions when its config says so (`POST /moto-api/config`
`{"stepfunctions": {"execute_state_machine": true}}`, before the machine is created), and a
task state calls its service with boto3 at `http://localhost:$MOTO_PORT`. The sandbox sets
MOTO_PORT to its own port, so those calls come back through this server: a Glue state
really runs the job's script, SageMaker states reach the tuning, transform and endpoint
executors, S3 and DynamoDB states reach moto's backends.

What moto 5.2.5 gets wrong or lacks, fixed here for the sandbox's executions:
- `.sync` integrations that wait for a job (`glue:startJobRun.sync`) start the job, then
  fail the state with "'NoneType' object has no attribute 'interrupt_all'" (moto's wait
  expects a task-token callback these integrations do not have). The sandbox waits the way
  Step Functions does: it polls the job's description until the job ends, gives that
  description as the state's result, or fails the state with `States.TaskFailed` and the
  description as its cause;
- SageMaker `.sync` (moto: "Unsupported .sync callback"): the same wait, on
  DescribeHyperParameterTuningJob, DescribeTransformJob or DescribeTrainingJob;
- an AWS SDK integration's result keeps boto3's types: a stream (`aws-sdk:s3:getObject`'s
  Body) that no path or intrinsic can read, timestamps that States.JsonToString cannot
  write. Step Functions gives JSON (the body as text, timestamps as text), so does the sandbox.
Everything else is moto's. Only this process's moto is changed, once, by install().
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_SECONDS = 0.2
# A SageMaker `.sync` action -> (describe call, name parameter, status field, done, failed).
SAGEMAKER_SYNC = {
    "create_hyper_parameter_tuning_job": ("describe_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
                                          "HyperParameterTuningJobStatus", ("Completed",), ("Failed", "Stopped")),
    "create_transform_job": ("describe_transform_job", "TransformJobName", "TransformJobStatus", ("Completed",),
                             ("Failed", "Stopped")),
    "create_training_job": ("describe_training_job", "TrainingJobName", "TrainingJobStatus", ("Completed",),
                            ("Failed", "Stopped")),
}  # fmt: skip
_installed = threading.Lock()
_done = False


def _json(value: Any) -> Any:
    """A boto3 response as Step Functions shows it: JSON (timestamps as text)."""
    return json.loads(json.dumps(value, default=str))


def _classes():
    """The sandbox's task-state classes, built on moto's (imported only when installed)."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_glue import (
        StateTaskServiceGlue,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (
        StateTaskServiceUnsupported,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    class SyncWait:
        """`.sync` as Step Functions does it: poll the job until it ends, no task token."""

        def _eval_integration_pattern(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            if self.resource.condition != ResourceCondition.Sync:
                return super()._eval_integration_pattern(env, resource_runtime_part, normalised_parameters,
                                                         state_credentials)  # fmt: skip
            self.timeout.eval(env=env)
            timeout_seconds = env.stack.pop()
            resolve = self._build_sync_resolver(env, resource_runtime_part, normalised_parameters, state_credentials)
            deadline = time.monotonic() + float(timeout_seconds or 99999999)
            while env.is_running():
                result = resolve()
                if result is not None:
                    env.stack.append(_json(result))
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_SECONDS)
            self.fail(env, StatesErrorNameType.StatesTimeout, "the job did not end before the state's timeout")

        def fail(self, env, error_type, cause: str):
            raise FailureEventException(FailureEvent(
                env=env, error_name=StatesErrorName(typ=error_type), event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                    resource=self._get_sfn_resource(), resourceType=self._get_sfn_resource_type(),
                    error=error_type.to_name(), cause=cause)),
            ))  # fmt: skip

    class SandboxGlue(SyncWait, StateTaskServiceGlue):
        """Glue: moto's integration, with the sandbox's `.sync` wait on GetJobRun."""

    class SandboxSageMaker(SyncWait, StateTaskServiceUnsupported):
        """SageMaker: request-response calls forwarded (moto's), `.sync` for the jobs above."""

        def __init__(self):
            super().__init__()
            self._supported_integration_patterns = {ResourceCondition.Sync}

        def _validate_service_integration_is_supported(self):
            """Every SageMaker action is supported: the sync ones are checked when resolved."""

        def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters,
                                 state_credentials) -> Callable[[], Any]:  # fmt: skip
            action = self._get_boto_service_action()
            if action not in SAGEMAKER_SYNC:
                raise RuntimeError(f"the sandbox has no .sync for sagemaker:{self.resource.api_action}")
            env.stack.pop()  # the create call's own response
            describe, key, field, done, failed = SAGEMAKER_SYNC[action]
            client = boto_client_for(region=resource_runtime_part.region, service="sagemaker",
                                     state_credentials=state_credentials)  # fmt: skip
            name = normalised_parameters[key]

            def resolve() -> Any:
                description = getattr(client, describe)(**{key: name})
                description.pop("ResponseMetadata", None)
                status = description[field]
                if status in done:
                    return description
                if status in failed:
                    self.fail(env, StatesErrorNameType.StatesTaskFailed, json.dumps(_json(description)))
                return None

            return resolve

    class SandboxAwsSdk(StateTaskServiceAwsSdk):
        """AWS SDK integrations, with streamed response members read as text."""

        def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            from botocore.response import StreamingBody

            super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)
            response = env.stack.pop()
            if isinstance(response, dict):
                for key, value in list(response.items()):
                    if isinstance(value, StreamingBody):
                        response[key] = value.read().decode("utf-8")
            env.stack.append(_json(response))

    return SandboxGlue, SandboxSageMaker, SandboxAwsSdk


def install(port: int) -> None:
    """Send this process's moto Step Functions task calls to the sandbox on `port`, with the
    `.sync` waits above. Once per process; later calls only move the port."""
    global _done
    os.environ["MOTO_PORT"] = str(port)
    with _installed:
        if _done:
            return
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory

        glue_class, sagemaker_class, sdk_class = _classes()
        original = state_task_factory.state_task_service_for

        def state_task_service_for(service_name: str):
            if service_name == "glue":
                return glue_class()
            if service_name == "sagemaker":
                return sagemaker_class()
            if service_name == "aws-sdk":
                return sdk_class()
            return original(service_name=service_name)

        state_task_factory.state_task_service_for = state_task_service_for
        _done = True
