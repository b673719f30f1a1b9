"""The aws target's pure parts: request builders, error explanations, waiting, the Glue code bundle.

No Dagster imports here: the Dagster faces (defs/aws_resources.py) and the Step Functions
export call these functions. boto3 is used only where a call is made (clients.py,
glue_code.upload); the request builders return plain dicts of API parameters.
"""
