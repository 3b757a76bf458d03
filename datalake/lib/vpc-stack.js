'use strict';

const cdk = require('aws-cdk-lib');
const ec2 = require('aws-cdk-lib/aws-ec2');

// The data lake's network: a VPC with private (isolated) subnets in three availability zones, each with its own
// route table; no internet or NAT gateway, AWS services being reached through endpoints: gateway endpoints for S3
// and DynamoDB, interface endpoints for Glue, KMS, SSM, Secrets Manager and Step Functions, all in the shared
// security group, whose members may talk to each other (a self-referencing ingress rule).
class VpcStack extends cdk.Stack {
  constructor(scope, id, props) {
    super(scope, id, props);
    const { config } = props;
    const env = config.environment;
    const prefix = config.logicalIdPrefix;

    this.vpc = new ec2.Vpc(this, `${prefix}Vpc`, {
      vpcName: `${env}${prefix}Vpc`,
      ipAddresses: ec2.IpAddresses.cidr(config.vpcCidr),
      maxAzs: 3,
      natGateways: 0,
      restrictDefaultSecurityGroup: false,
      subnetConfiguration: [{ name: 'private', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
    });

    this.sharedSecurityGroup = new ec2.SecurityGroup(this, `${env}${prefix}SharedIngressSecurityGroup`, {
      vpc: this.vpc,
      securityGroupName: `${env}${prefix}SharedIngressSecurityGroup`,
      description: 'Shared security group for data lake resources, with a self-referencing ingress rule',
      allowAllOutbound: true,
    });
    this.sharedSecurityGroup.addIngressRule(this.sharedSecurityGroup, ec2.Port.allTraffic(), 'Self-referencing ingress rule');

    this.vpc.addGatewayEndpoint(`${env}${prefix}S3Endpoint`, { service: ec2.GatewayVpcEndpointAwsService.S3 });
    this.vpc.addGatewayEndpoint(`${env}${prefix}DynamoDbEndpoint`, { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB });
    const interfaces = {
      Glue: ec2.InterfaceVpcEndpointAwsService.GLUE,
      Kms: ec2.InterfaceVpcEndpointAwsService.KMS,
      Ssm: ec2.InterfaceVpcEndpointAwsService.SSM,
      SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      StepFunctions: ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
    };
    for (const [name, service] of Object.entries(interfaces)) {
      this.vpc.addInterfaceEndpoint(`${env}${prefix}${name}Endpoint`, {
        service,
        securityGroups: [this.sharedSecurityGroup],
      });
    }

    // What the ETL pipelines need, one output each (the pipeline writes them to Parameter Store).
    new cdk.CfnOutput(this, 'VpcId', { value: this.vpc.vpcId });
    this.vpc.isolatedSubnets.forEach((subnet, i) => {
      new cdk.CfnOutput(this, `AvailabilityZone${i + 1}`, { value: subnet.availabilityZone });
      new cdk.CfnOutput(this, `SubnetId${i + 1}`, { value: subnet.subnetId });
      new cdk.CfnOutput(this, `RouteTable${i + 1}`, { value: subnet.routeTable.routeTableId });
    });
    new cdk.CfnOutput(this, 'SharedSecurityGroupId', { value: this.sharedSecurityGroup.securityGroupId });
  }

  // Fixed availability zones (a, b, c of the region): synthesis needs no AZ lookup, so no AWS access at all.
  get availabilityZones() {
    return ['a', 'b', 'c'].map((zone) => `${this.region}${zone}`);
  }
}

module.exports = { VpcStack };
