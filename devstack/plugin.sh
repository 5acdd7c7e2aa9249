#!/bin/bash
#
# plugin.sh - DevStack plugin for novamig, the live-migration measurement harness
# (the packages it needs are in files/bindep.txt, which DevStack installs by itself)
#
# DevStack sources this file as `plugin.sh <mode> [phase]` (doc/source/plugins.rst of DevStack):
#   stack install      novamig into its own virtualenv
#   stack post-config  nothing on the computes unless asked (NOVAMIG_PERMIT_POST_COPY)
#   stack extra        the novamig-full guest image built and uploaded to Glance; the heartbeat
#                      collector's UDP port opened for the guests; the SSH hosts file written
#   stack test-config  [novamig] and [service_available] novamig in $TEMPEST_CONFIG, with tempest
#   unstack            the firewall rule removed
#   clean              the virtualenv removed
# shellcheck shell=bash

# Save trace setting
_XTRACE_NOVAMIG=$(set +o | grep xtrace)
set -o xtrace

function install_novamig {
    if [[ ! -x $NOVAMIG_VENV/bin/python ]]; then
        "$NOVAMIG_PYTHON" -m venv "$NOVAMIG_VENV"
    fi
    # shellcheck disable=SC2086  # NOVAMIG_PIP_ARGS is a list of arguments
    "$NOVAMIG_VENV/bin/pip" install $NOVAMIG_PIP_ARGS "$NOVAMIG_DIR"
    # on the PATH of the stack user and of jobs, without activating the virtualenv
    sudo ln -sf "$NOVAMIG_VENV/bin/novamig" /usr/local/bin/novamig
}

function configure_novamig_computes {
    if [[ "$NOVAMIG_PERMIT_POST_COPY" == "True" ]]; then
        iniset "$NOVA_CONF" libvirt live_migration_permit_post_copy True
        if [[ -n "${NOVA_CPU_CONF:-}" && "$NOVA_CPU_CONF" != "$NOVA_CONF" ]]; then
            iniset "$NOVA_CPU_CONF" libvirt live_migration_permit_post_copy True
        fi
    fi
}

function _novamig_firewall_rule {
    # the rule as iptables takes it after -I/-D INPUT
    echo "-p udp --dport $NOVAMIG_HEARTBEAT_PORT -s ${FLOATING_RANGE:-172.24.4.0/24} -j ACCEPT -m comment --comment novamig-heartbeat"
}

function init_novamig {
    if [[ "$NOVAMIG_UPLOAD_IMAGE" == "True" ]]; then
        # builds the image once (cached under ~/.cache/novamig) and uploads it as a public image
        "$NOVAMIG_VENV/bin/novamig" image upload full --cloud "$NOVAMIG_CLOUD" \
            --name "$NOVAMIG_IMAGE_NAME" --visibility public --replace
    fi
    if [[ "$NOVAMIG_OPEN_FIREWALL" == "True" ]]; then
        # shellcheck disable=SC2046  # the rule is several arguments
        sudo iptables -I INPUT $(_novamig_firewall_rule)
    fi
    write_novamig_ssh_hosts
}

function write_novamig_ssh_hosts {
    # NOVAMIG_SSH_HOSTS_MAP "host=user@address,..." as the YAML mapping novamig reads
    local entry
    local -a entries
    IFS=, read -r -a entries <<< "$NOVAMIG_SSH_HOSTS_MAP"
    sudo mkdir -p "$(dirname "$NOVAMIG_SSH_HOSTS_FILE")"
    for entry in "${entries[@]}"; do
        echo "${entry%%=*}: ${entry#*=}"
    done | sudo tee "$NOVAMIG_SSH_HOSTS_FILE" > /dev/null
}

function configure_tempest_for_novamig {
    iniset "$TEMPEST_CONFIG" service_available novamig True
    iniset "$TEMPEST_CONFIG" novamig scenarios "$NOVAMIG_TEMPEST_SCENARIOS"
    iniset "$TEMPEST_CONFIG" novamig image "$NOVAMIG_IMAGE_NAME"
    iniset "$TEMPEST_CONFIG" novamig ssh_hosts "$NOVAMIG_SSH_HOSTS_FILE"
    # the rest only when set: an option left out keeps the scenario's own value
    local option variable
    for option in network floating_ip_network heartbeat_collector; do
        variable=NOVAMIG_${option^^}
        if [[ -n "${!variable:-}" ]]; then
            iniset "$TEMPEST_CONFIG" novamig "$option" "${!variable}"
        fi
    done
    if [[ -n "$NOVAMIG_TEMPEST_OVERRIDES" ]]; then
        iniset "$TEMPEST_CONFIG" novamig overrides "$NOVAMIG_TEMPEST_OVERRIDES"
    fi
}

function stop_novamig {
    if [[ "$NOVAMIG_OPEN_FIREWALL" == "True" ]]; then
        # shellcheck disable=SC2046  # the rule is several arguments
        sudo iptables -D INPUT $(_novamig_firewall_rule) || true
    fi
}

function cleanup_novamig {
    rm -rf "$NOVAMIG_VENV"
    sudo rm -f /usr/local/bin/novamig
}

if is_service_enabled novamig; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing novamig"
        install_novamig
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring the computes for novamig"
        configure_novamig_computes
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Uploading novamig's guest image"
        init_novamig
    elif [[ "$1" == "stack" && "$2" == "test-config" ]]; then
        if is_service_enabled tempest; then
            echo_summary "Configuring Tempest for novamig"
            configure_tempest_for_novamig
        fi
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_novamig
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_novamig
    fi
fi

# Restore xtrace
$_XTRACE_NOVAMIG
