#!/bin/sh
# novamig full guest: busybox udhcpc's event script (DHCP on the first NIC, Glance form).
#
# Why not dhclient or cloud-init's network rendering: PID 1 is a shell script, not systemd, and
# busybox (already in the image for the agent's tiny sibling) needs only this script.
# udhcpc sets: interface ip mask (prefix length) router dns mtu staticroutes (option 121).

BB=/usr/local/lib/novamig/busybox
case "$1" in
    deconfig)
        $BB ip -4 addr flush dev "$interface"
        $BB ip link set "$interface" up
        ;;
    bound|renew)
        $BB ip -4 addr flush dev "$interface"
        $BB ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$mtu" ] && $BB ip link set "$interface" mtu "$mtu"
        if [ -n "$staticroutes" ]; then
            # pairs "destination/prefix gateway" (e.g. the metadata service's 169.254.169.254)
            set -- $staticroutes
            while [ $# -ge 2 ]; do
                $BB ip route replace "$1" via "$2" dev "$interface"
                shift 2
            done
        fi
        for r in $router; do
            $BB ip route replace default via "$r" dev "$interface"
            break
        done
        if [ -n "$dns" ]; then
            : > /etc/resolv.conf.novamig
            [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf.novamig
            for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf.novamig; done
            mv -f /etc/resolv.conf.novamig /etc/resolv.conf 2>/dev/null
        fi
        echo "novamig-dhcp: $interface $ip/${mask:-24} router ${router:-none}"
        ;;
esac
exit 0
