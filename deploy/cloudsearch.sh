#!/usr/bin/env bash
# Creates (or updates) the CloudSearch domain Rookery's search adapter uses, with the index fields of
# docs/decisions/0003-search-ordering.md, and prints the two endpoints to pass to deploy/template.yaml.
# CloudFormation has no CloudSearch resource type, so this runs once per environment before `sam deploy`.
# Every step is idempotent: defining a field that exists updates it.
#
# Usage: deploy/cloudsearch.sh <domain-name> [instance-type]
# Needs the AWS CLI v2 with credentials for the target account and AWS_REGION (or a profile region) set.
set -euo pipefail

domain="${1:?usage: deploy/cloudsearch.sh <domain-name> [instance-type]}"
instance="${2:-search.small}"
account="$(aws sts get-caller-identity --query Account --output text)"

echo "creating domain ${domain} (no-op if it exists)" >&2
aws cloudsearch create-domain --domain-name "$domain" >/dev/null

# Literal fields: exact values, used in filters (`fq`) and structured `term` queries.
for field in doc_id owner collection item_id visibility state; do
  return_enabled=false
  [ "$field" = doc_id ] && return_enabled=true
  aws cloudsearch define-index-field --domain-name "$domain" --name "$field" --type literal \
    --search-enabled true --return-enabled "$return_enabled" --facet-enabled false --sort-enabled false >/dev/null
done

# The item's version, read back before every upload to drop stale changes.
aws cloudsearch define-index-field --domain-name "$domain" --name version --type int \
  --search-enabled true --return-enabled true --facet-enabled false --sort-enabled false >/dev/null

# Every string of the item's data. `_mul_default_` tokenizes without stemming or stop words, so a word
# matches only itself (case-insensitively), as API.md specifies.
aws cloudsearch define-analysis-scheme --domain-name "$domain" \
  --analysis-scheme AnalysisSchemeName=rookery_words,AnalysisSchemeLanguage=mul >/dev/null
aws cloudsearch define-index-field --domain-name "$domain" --name text --type text-array \
  --analysis-scheme rookery_words --return-enabled false --highlight-enabled false >/dev/null

# The item as JSON, returned with each hit; searches never name this field.
aws cloudsearch define-index-field --domain-name "$domain" --name item --type text \
  --analysis-scheme rookery_words --return-enabled true --highlight-enabled false --sort-enabled false >/dev/null

aws cloudsearch update-scaling-parameters --domain-name "$domain" \
  --scaling-parameters "DesiredInstanceType=${instance}" >/dev/null

aws cloudsearch update-domain-endpoint-options --domain-name "$domain" \
  --domain-endpoint-options EnforceHTTPS=true,TLSSecurityPolicy=Policy-Min-TLS-1-2-2019-07 >/dev/null

# Only signed requests from this account; each function's IAM role then grants exactly what it needs.
policy=$(cat <<POLICY
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::${account}:root"},"Action":["cloudsearch:search","cloudsearch:document"]}]}
POLICY
)
aws cloudsearch update-service-access-policies --domain-name "$domain" --access-policies "$policy" >/dev/null

echo "indexing (the domain takes several minutes to become active)" >&2
aws cloudsearch index-documents --domain-name "$domain" >/dev/null

doc="$(aws cloudsearch describe-domains --domain-names "$domain" --query 'DomainStatusList[0].DocService.Endpoint' --output text)"
search="$(aws cloudsearch describe-domains --domain-names "$domain" --query 'DomainStatusList[0].SearchService.Endpoint' --output text)"
if [ "$doc" = "None" ] || [ "$search" = "None" ]; then
  echo "the domain has no endpoints yet; run this script again in a few minutes" >&2
  exit 2
fi
echo "CloudSearchDomainName=${domain}"
echo "CloudSearchDocumentEndpoint=${doc}"
echo "CloudSearchSearchEndpoint=${search}"
