'use strict';

const cdk = require('aws-cdk-lib');
const iam = require('aws-cdk-lib/aws-iam');
const { resourceName } = require('./names');

// The role the deployment account assumes to manage the ETL tables (the ETL pipelines load job configuration
// through it): trusted by the deployment account, allowed on the data lake's tables and their indexes only.
class IamStack extends cdk.Stack {
  constructor(scope, id, props) {
    super(scope, id, props);
    const { config, tables } = props;

    this.crossAccountDynamoDbRole = new iam.Role(this, `${config.environment}${config.logicalIdPrefix}CrossAccountDynamoDbRole`, {
      roleName: resourceName(config, 'cross-account-dynamodb-role'),
      description: 'Cross-account role the deployment account uses to manage the data lake DynamoDB tables and their records',
      assumedBy: new iam.AccountPrincipal(config.deploymentAccount),
      inlinePolicies: {
        DynamoDbPolicy: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              sid: 'DataLakeTables',
              effect: iam.Effect.ALLOW,
              actions: ['dynamodb:*'],
              resources: tables.flatMap((t) => [t.tableArn, `${t.tableArn}/index/*`]),
            }),
          ],
        }),
      },
    });

    new cdk.CfnOutput(this, 'CrossAccountDynamoDbRoleArn', { value: this.crossAccountDynamoDbRole.roleArn });
  }
}

module.exports = { IamStack };
