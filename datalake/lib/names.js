'use strict';

// Names of the data lake's resources, from the configuration. Buckets and roles have physical names (other
// pipelines find them through Parameter Store, and people in the console), so the prefix is checked against the
// longest name it builds.

/** The AWS partition of a region (ARNs are built as plain strings where CloudFormation needs a literal). */
function partition(region) {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

/** `prod-datalake-333333333333-us-east-1-raw`: S3 bucket names are global, hence the account and region. */
function bucketName(config, zone) {
  return `${config.environment.toLowerCase()}-${config.resourceNamePrefix}-${config.account}-${config.region}-${zone}`;
}

/** `prod-datalake-etl-job-config`. */
function resourceName(config, what) {
  return `${config.environment.toLowerCase()}-${config.resourceNamePrefix}-${what}`;
}

const ZONES = ['raw', 'conformed', 'purpose-built'];

/** Every physical name the stage uses that S3 or IAM limits; throws naming the first too long. */
function checkNameLengths(config) {
  for (const zone of [...ZONES, 'access-logs']) {
    const name = bucketName(config, zone);
    if (name.length > 63) {
      throw new Error(
        `the resource name prefix \`${config.resourceNamePrefix}\` is too long: the bucket name \`${name}\` has ` +
          `${name.length} characters, S3 allows 63`,
      );
    }
  }
  const role = resourceName(config, 'cross-account-dynamodb-role');
  if (role.length > 64) {
    throw new Error(`the resource name prefix is too long: the role name \`${role}\` has ${role.length} characters, IAM allows 64`);
  }
}

module.exports = { partition, bucketName, resourceName, checkNameLengths, ZONES };
