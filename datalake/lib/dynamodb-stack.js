'use strict';

const cdk = require('aws-cdk-lib');
const dynamodb = require('aws-cdk-lib/aws-dynamodb');
const { resourceName } = require('./names');

// The ETL jobs' metadata: their configuration, and an audit record per job execution (queried by job).
class DynamoDbStack extends cdk.Stack {
  constructor(scope, id, props) {
    super(scope, id, props);
    const { config } = props;
    const protectedEnvironment = config.environment === 'Prod' || config.environment === 'Test';
    const common = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: protectedEnvironment ? cdk.RemovalPolicy.RETAIN : cdk.RemovalPolicy.DESTROY,
    };

    this.configTable = new dynamodb.Table(this, 'EtlJobConfigTable', {
      ...common,
      tableName: resourceName(config, 'etl-job-config'),
      partitionKey: { name: 'job_name', type: dynamodb.AttributeType.STRING },
    });
    this.auditTable = new dynamodb.Table(this, 'EtlJobAuditTable', {
      ...common,
      tableName: resourceName(config, 'etl-job-audit'),
      partitionKey: { name: 'execution_id', type: dynamodb.AttributeType.STRING },
    });
    this.auditTable.addGlobalSecondaryIndex({
      indexName: 'job-name-index',
      partitionKey: { name: 'job_name', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'job_start_time', type: dynamodb.AttributeType.STRING },
    });

    new cdk.CfnOutput(this, 'EtlJobConfigTableName', { value: this.configTable.tableName });
    new cdk.CfnOutput(this, 'EtlJobAuditTableName', { value: this.auditTable.tableName });
  }
}

module.exports = { DynamoDbStack };
