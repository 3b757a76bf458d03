'use strict';

const cdk = require('aws-cdk-lib');
const { VpcStack } = require('./vpc-stack');
const { S3BucketZonesStack } = require('./s3-bucket-zones-stack');
const { DynamoDbStack } = require('./dynamodb-stack');
const { IamStack } = require('./iam-stack');
const { tag } = require('./tagging');
const { checkNameLengths } = require('./names');

// One environment of the data lake: network, storage zones, ETL metadata tables and the cross-account role. The
// stacks' outputs are what the pipeline writes to Parameter Store for the ETL pipelines (pipelines/datalake.ron).
class DataLakeStage extends cdk.Stage {
  constructor(scope, id, props) {
    super(scope, id, props);
    const config = props.config;
    checkNameLengths(config);
    const env = config.environment;

    const vpc = new VpcStack(this, 'Vpc', {
      config,
      description: `Data lake network (${env}): private subnets in three AZs, a shared security group, gateway and interface endpoints`,
    });
    const zones = new S3BucketZonesStack(this, 'S3BucketZones', {
      config,
      description: `Data lake storage (${env}): KMS key, access-logs bucket, raw, conformed and purpose-built buckets`,
    });
    const tables = new DynamoDbStack(this, 'DynamoDb', {
      config,
      description: `Data lake ETL metadata (${env}): job configuration and job audit tables`,
    });
    const iam = new IamStack(this, 'Iam', {
      config,
      tables: [tables.configTable, tables.auditTable],
      description: `Data lake access (${env}): the role the deployment account assumes to manage the ETL tables`,
    });
    for (const stack of [vpc, zones, tables, iam]) tag(stack, config);
  }
}

module.exports = { DataLakeStage };
