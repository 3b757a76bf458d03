'use strict';

const cdk = require('aws-cdk-lib');

// Every resource of the stage carries the environment, team, application and cost center, as the original app tags
// them. KMS keys are left out: the local emulator (moto 5.2.5) fails to create a key that has tags.
const UNTAGGED = ['AWS::KMS::Key'];

function tag(scope, config) {
  const prefix = config.resourceNamePrefix;
  const tags = {
    [`${prefix}:environment`]: config.environment,
    [`${prefix}:cost-center`]: `${config.logicalIdPrefix}Infrastructure`,
    [`${prefix}:team`]: `${config.logicalIdPrefix}Admin`,
    [`${prefix}:application`]: `${config.logicalIdPrefix}Infrastructure`,
  };
  for (const [key, value] of Object.entries(tags)) {
    cdk.Tags.of(scope).add(key, value, { excludeResourceTypes: UNTAGGED });
  }
}

module.exports = { tag };
