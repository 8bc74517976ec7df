#!/usr/bin/env bash
# Prints the Debian mirror that the machine's own apt sources use (not the security one), or
# deb.debian.org's, for the setup scripts' extra suites.
mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
echo "${mirror:-http://deb.debian.org/debian}"
