'use strict';

const cdk = require('aws-cdk-lib');
const iam = require('aws-cdk-lib/aws-iam');
const kms = require('aws-cdk-lib/aws-kms');
const s3 = require('aws-cdk-lib/aws-s3');
const { bucketName, partition, ZONES } = require('./names');

// The data lake's storage zones: a KMS key (its policy lets the account administer it, and the account and the
// deployment account use it), an access-logs bucket, and the raw, conformed and purpose-built buckets: SSE-KMS with
// bucket keys, versioned, public access blocked, TLS only, access logged, with lifecycle rules (long retention and
// Glacier in Prod). Prod and Test retain everything and refuse bucket deletion by IAM users.
class S3BucketZonesStack extends cdk.Stack {
  constructor(scope, id, props) {
    super(scope, id, props);
    const { config } = props;
    const env = config.environment;
    const prefix = config.logicalIdPrefix;
    const protectedEnvironment = env === 'Prod' || env === 'Test';
    const removalPolicy = protectedEnvironment ? cdk.RemovalPolicy.RETAIN : cdk.RemovalPolicy.DESTROY;
    const root = (account) => `arn:${partition(config.region)}:iam::${account}:root`;

    // The key policy as a JSON string (CloudFormation takes either): the local emulator fails on later calls to a
    // key whose policy was given as an object.
    const keyPolicy = {
      Version: '2012-10-17',
      Statement: [
        { Sid: 'AccountAdministersTheKey', Effect: 'Allow', Principal: { AWS: root(config.account) }, Action: 'kms:*', Resource: '*' },
        {
          Sid: 'DataLakeUsesTheKey',
          Effect: 'Allow',
          Principal: { AWS: [root(config.account), root(config.deploymentAccount)] },
          Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:DescribeKey'],
          Resource: '*',
        },
      ],
    };
    const cfnKey = new kms.CfnKey(this, `${env}${prefix}KmsKey`, {
      description: `Encrypts the ${env} data lake buckets`,
      enableKeyRotation: true,
    });
    cfnKey.addPropertyOverride('KeyPolicy', JSON.stringify(keyPolicy));
    cfnKey.applyRemovalPolicy(removalPolicy);
    this.kmsKey = kms.Key.fromKeyArn(this, 'DataLakeKey', cfnKey.attrArn);
    new kms.CfnAlias(this, `${env}${prefix}KmsKeyAlias`, {
      aliasName: `alias/${env.toLowerCase()}-${config.resourceNamePrefix}-data-lake`,
      targetKeyId: cfnKey.ref,
    });

    // Server access logs may only go to a bucket with S3-managed encryption.
    this.accessLogsBucket = new s3.Bucket(this, `${env}${prefix}AccessLogsBucket`, {
      bucketName: bucketName(config, 'access-logs'),
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      removalPolicy: cdk.RemovalPolicy.RETAIN,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: cdk.Duration.days(protectedEnvironment ? 365 : 30) }],
    });

    this.buckets = {};
    for (const zone of ZONES) {
      const name = bucketName(config, zone);
      const bucket = new s3.Bucket(this, `${env}${prefix}${camel(zone)}Bucket`, {
        bucketName: name,
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: this.kmsKey,
        bucketKeyEnabled: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        versioned: true,
        removalPolicy,
        serverAccessLogsBucket: this.accessLogsBucket,
        serverAccessLogsPrefix: `${name}/`,
        lifecycleRules: [lifecycle(env, zone)],
      });
      if (protectedEnvironment) {
        bucket.addToResourcePolicy(
          new iam.PolicyStatement({
            sid: 'BlockUserDeletionOfBucket',
            effect: iam.Effect.DENY,
            principals: [new iam.AnyPrincipal()],
            actions: ['s3:DeleteBucket'],
            resources: [bucket.bucketArn],
            conditions: { StringLike: { 'aws:userId': `arn:${partition(config.region)}:iam::${config.account}:user/*` } },
          }),
        );
      }
      this.buckets[zone] = bucket;
    }

    new cdk.CfnOutput(this, 'KmsKeyArn', { value: cfnKey.attrArn });
    new cdk.CfnOutput(this, 'AccessLogsBucketName', { value: this.accessLogsBucket.bucketName });
    for (const zone of ZONES) {
      new cdk.CfnOutput(this, `${camel(zone)}BucketName`, { value: this.buckets[zone].bucketName });
    }
  }
}

/** Prod keeps data seven years and moves it to Glacier after one; the others keep it two months. */
function lifecycle(env, zone) {
  if (env === 'Prod') {
    return {
      id: `${zone}-retention`,
      expiration: cdk.Duration.days(2555),
      noncurrentVersionExpiration: cdk.Duration.days(90),
      transitions: [{ storageClass: s3.StorageClass.GLACIER, transitionAfter: cdk.Duration.days(365) }],
      abortIncompleteMultipartUploadAfter: cdk.Duration.days(7),
    };
  }
  return {
    id: `${zone}-retention`,
    expiration: cdk.Duration.days(60),
    noncurrentVersionExpiration: cdk.Duration.days(30),
    abortIncompleteMultipartUploadAfter: cdk.Duration.days(7),
  };
}

function camel(zone) {
  return zone
    .split('-')
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('');
}

module.exports = { S3BucketZonesStack };
