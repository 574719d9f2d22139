// Module kiln.dev/tools/gateway-api pins the Gateway API release whose
// standard-channel CRDs (config/crd/standard in the module) the
// ModelDeployment integration test applies to the local clusters. Nothing is
// built from it: scripts/build-tools.sh gateway-api downloads the module,
// which go.sum verifies, and copies the CRDs into the tools cache.
module kiln.dev/tools/gateway-api

go 1.24.0

require sigs.k8s.io/gateway-api v1.6.3
