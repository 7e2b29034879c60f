"""The one data converter of the worker and its clients: pydantic payloads, and benign failures
without a stack trace."""

from __future__ import annotations

import dataclasses

from temporalio.api.enums.v1 import ApplicationErrorCategory
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverter, PayloadConverter


class BenignWithoutStackTrace(DefaultFailureConverter):
    """Drops the stack trace of a BENIGN application failure ("not finished yet, check again later").

    A wait is an activity that fails benignly until the job is done; the UI's *Pending Activities*
    tab shows each attempt's failure, and a Python traceback under "still PROCESSING" reads like a
    crash. Real failures keep their traces. The worker that runs the activity encodes the failure,
    so this must be the worker's converter.
    """

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        if failure.application_failure_info.category == ApplicationErrorCategory.APPLICATION_ERROR_CATEGORY_BENIGN:
            failure.stack_trace = ""


DATA_CONVERTER = dataclasses.replace(pydantic_data_converter, failure_converter_class=BenignWithoutStackTrace)
