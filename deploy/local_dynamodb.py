#!/usr/bin/env python3
"""Creates the router's two tables, with their streams, on a local DynamoDB-compatible server
(moto in server mode, as `make test-deps` installs it) and writes the demo session into them:
client `demo`, thread `hello`, public, on a dev server at 127.0.0.1:4321, as conf/sessions.toml
has it. Run with the moto virtualenv's Python, which has boto3:

    .venv-moto/bin/python deploy/local_dynamodb.py http://127.0.0.1:8000
"""

import sys

import boto3

SESSIONS = "webordinary-edit-sessions"
CONTAINERS = "webordinary-containers"


def create_table(ddb, name, key):
    existing = ddb.list_tables()["TableNames"]
    if name in existing:
        print(f"{name}: exists, left as it is")
        return
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    print(f"{name}: created, stream NEW_AND_OLD_IMAGES")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} ENDPOINT_URL  (e.g. http://127.0.0.1:8000)")
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=sys.argv[1],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    create_table(ddb, SESSIONS, "sessionId")
    create_table(ddb, CONTAINERS, "containerId")
    ddb.put_item(
        TableName=SESSIONS,
        Item={
            "sessionId": {"S": "demo-hello"},
            "containerId": {"S": "demo-container"},
            "clientId": {"S": "demo"},
            "access": {"S": "public"},
        },
    )
    ddb.put_item(
        TableName=CONTAINERS,
        Item={
            "containerId": {"S": "demo-container"},
            "containerIp": {"S": "127.0.0.1"},
            "containerPort": {"N": "4321"},
            "status": {"S": "running"},
        },
    )
    print("session demo-hello -> demo-container at 127.0.0.1:4321, public")


if __name__ == "__main__":
    main()
