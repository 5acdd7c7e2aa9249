#!/usr/bin/env bash
# The fast test tier once more, on a machine that looks like an OpenStack user's: a clouds.yaml and a
# secure.yaml in ~/.config/openstack with real-looking clouds and comments (one of them a
# novamig-embedded entry of the user's own), OS_CLOUD naming one of them and the other OS_* variables
# of an openrc exported. The suite must pass and leave the planted files byte for byte as they were
# (sha256, permission bits, no file added or removed).
#
# Whatever was in ~/.config/openstack is moved aside first and put back afterwards, also when the
# tests fail or the script is interrupted. Do not run it while another program edits that directory.
# Extra arguments go to pytest. Exit: pytest's own code (5, no test collected, is a failure too),
# or 1 when the tests passed but changed a planted file.
set -euo pipefail
cd "$(dirname "$0")/.."

config_dir="${HOME:?}/.config/openstack"
had_dot_config=yes
[[ -d "$HOME/.config" ]] || had_dot_config=no
# Beside the home directory, not in /tmp: a rename on one file system cannot be half done.
aside=$(mktemp -d "$HOME/.novamig-planted-backup.XXXXXX")

restore() {
    local rc=$?
    rm -rf "$config_dir"
    if [[ -e "$aside/openstack" || -L "$aside/openstack" ]]; then
        mv "$aside/openstack" "$config_dir"
    elif [[ $had_dot_config == no ]]; then
        rmdir "$HOME/.config" 2>/dev/null || true
    fi
    rmdir "$aside"
    echo "novamig planted-config: $config_dir restored"
    exit "$rc"
}
trap restore EXIT
trap 'exit 130' INT TERM
if [[ -e "$config_dir" || -L "$config_dir" ]]; then
    mv "$config_dir" "$aside/openstack"
fi

mkdir -p "$config_dir"
cat >"$config_dir/clouds.yaml" <<'EOF'
# Planted by tools/test-planted-config.sh: a user's clouds, none of them reachable
# (192.0.2.0/24 is TEST-NET-1).
clouds:
  # the lab; its password is in secure.yaml
  planted-lab:
    auth:
      auth_url: "http://192.0.2.10:5000/v3"   # keystone behind haproxy
      username: 'planted-user'
      project_name: planted-project
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3

  planted-prod: {auth: {auth_url: "http://192.0.2.11/identity", username: ops}, interface: public}
  # the user's own `novamig cloud up`, from another work directory
  novamig-embedded:
    auth:
      auth_url: http://192.0.2.12:35357/v3
      username: admin
      password: planted-embedded-password
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    novamig_embedded_workdir: /nonexistent/planted-embedded
# shared with the openstack CLI
cache:
  expiration_time: 3600
EOF
cat >"$config_dir/secure.yaml" <<'EOF'
# Planted: passwords kept apart from clouds.yaml
clouds:
  planted-lab:
    auth:
      password: planted-secure-password
  planted-secret-only:
    auth:
      password: another-planted-password
EOF
chmod 600 "$config_dir/secure.yaml"

export OS_CLOUD=planted-lab
export OS_CLIENT_CONFIG_FILE="$config_dir/clouds.yaml"
export OS_AUTH_URL=http://192.0.2.10:5000/v3
export OS_USERNAME=planted-user
export OS_PASSWORD=planted-env-password
export OS_PROJECT_NAME=planted-project
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export OS_IDENTITY_API_VERSION=3
export OS_INTERFACE=public

fingerprint() {
    (cd "$config_dir" && find . -print0 | sort -z | xargs -0 stat -c '%n %a %F' && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
before=$(fingerprint)

echo "novamig planted-config: pytest -m 'not slow' with OS_CLOUD=$OS_CLOUD and a planted $config_dir"
set +e
.venv/bin/pytest -m "not slow" -q "$@"
rc=$?
set -e

after=$(fingerprint)
if [[ "$before" != "$after" ]]; then
    echo "novamig planted-config: the tests changed the planted configuration:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    [[ $rc -ne 0 ]] || rc=1
fi
if [[ $rc -eq 5 ]]; then
    echo "novamig planted-config: pytest collected no test" >&2
fi
exit "$rc"
