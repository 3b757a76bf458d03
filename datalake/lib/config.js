'use strict';

// The environment's configuration, as the pipeline gives it (pipelines/datalake.ron reads it from SSM Parameter
// Store of the deployment account, like the original app's configuration module). Every value is checked here, so a
// bad configuration stops `cdk synth` with a message instead of reaching CloudFormation.

const ENVIRONMENTS = ['Dev', 'Test', 'Prod'];

/** The configuration in `env` (process.env by default); throws one error listing every problem. */
function readConfiguration(env = process.env) {
  const problems = [];
  const value = (name) => {
    const v = (env[name] || '').trim();
    if (!v) problems.push(`${name} is not set`);
    return v;
  };
  const config = {
    environment: value('DATALAKE_ENVIRONMENT'),
    account: value('DATALAKE_ACCOUNT_ID'),
    region: value('DATALAKE_REGION'),
    vpcCidr: value('DATALAKE_VPC_CIDR'),
    deploymentAccount: value('DATALAKE_DEPLOYMENT_ACCOUNT_ID'),
    logicalIdPrefix: value('DATALAKE_LOGICAL_ID_PREFIX'),
    resourceNamePrefix: value('DATALAKE_RESOURCE_NAME_PREFIX'),
  };
  if (config.environment && !ENVIRONMENTS.includes(config.environment)) {
    problems.push(`DATALAKE_ENVIRONMENT is \`${config.environment}\`: it must be one of ${ENVIRONMENTS.join(', ')}`);
  }
  for (const [name, account] of [
    ['DATALAKE_ACCOUNT_ID', config.account],
    ['DATALAKE_DEPLOYMENT_ACCOUNT_ID', config.deploymentAccount],
  ]) {
    if (account && !/^[0-9]{12}$/.test(account)) problems.push(`${name} is \`${account}\`: not a 12-digit account id`);
  }
  if (config.region && !/^[a-z]{2}(-[a-z]+)+-[0-9]$/.test(config.region)) {
    problems.push(`DATALAKE_REGION is \`${config.region}\`: not an AWS region`);
  }
  const cidr = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(config.vpcCidr);
  if (config.vpcCidr && (!cidr || cidr.slice(1, 5).some((o) => Number(o) > 255) || Number(cidr[5]) < 16 || Number(cidr[5]) > 24)) {
    problems.push(`DATALAKE_VPC_CIDR is \`${config.vpcCidr}\`: give an IPv4 block from /16 to /24 (three subnets are cut from it)`);
  }
  if (config.logicalIdPrefix && !/^[A-Za-z][A-Za-z0-9]*$/.test(config.logicalIdPrefix)) {
    problems.push(`DATALAKE_LOGICAL_ID_PREFIX is \`${config.logicalIdPrefix}\`: letters and digits only, starting with a letter`);
  }
  // Bucket and role names are built from it: S3's rules, as the original app checks them.
  if (config.resourceNamePrefix && !validResourceNamePrefix(config.resourceNamePrefix)) {
    problems.push(
      `DATALAKE_RESOURCE_NAME_PREFIX is \`${config.resourceNamePrefix}\`: resource names may only contain lowercase ` +
        'letters, digits and hyphens, and cannot start or end with a hyphen (at most 30 characters)',
    );
  }
  if (problems.length) {
    throw new Error(`the data lake configuration is not valid:\n  - ${problems.join('\n  - ')}`);
  }
  return config;
}

/** Lowercase letters, digits and inner hyphens, short enough for the longest bucket name built from it. */
function validResourceNamePrefix(prefix) {
  return /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(prefix) && prefix.length <= 30;
}

module.exports = { readConfiguration, validResourceNamePrefix, ENVIRONMENTS };
