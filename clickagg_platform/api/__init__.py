"""The query API and dashboard: clicks by campaign/ad/advertiser, billing statements, health."""
