#!/usr/bin/env node
'use strict';

// The data lake's infrastructure: one stage (VPC, S3 zones, DynamoDB, IAM) for the environment the pipeline
// deploys, with that environment's account, region and VPC CIDR (see lib/config.js).
const cdk = require('aws-cdk-lib');
const { readConfiguration } = require('../lib/config');
const { DataLakeStage } = require('../lib/data-lake-stage');

let config;
try {
  config = readConfiguration();
} catch (e) {
  console.error(e.message);
  process.exit(1);
}

const app = new cdk.App({
  // No tree.json, no AWS::CDK::Metadata resource, no stack traces with this checkout's paths in the assembly: the
  // same sources and configuration give the same assembly, so publishing it again uploads nothing.
  treeMetadata: false,
  analyticsReporting: false,
  stackTraces: false,
  context: { 'aws:cdk:disable-creation-stack-traces': true },
  builtinCloudFormationValidation: false,
});

new DataLakeStage(app, config.environment, { env: { account: config.account, region: config.region }, config });

app.synth();
