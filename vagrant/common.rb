# frozen_string_literal: true

# Builds the VMs of one topology of topology.json (shared with the lab's tests/kernel/topology.py): one VM per
# host, one isolated private network per network, the host's role script as its provisioner.
require "ipaddr"
require "json"

module IpvsdVagrant
  CHECKOUT = File.expand_path("..", __dir__)
  TOPOLOGIES = JSON.parse(File.read(File.join(__dir__, "topology.json")))

  # The role scripts' arguments for one host: every address as NET=ADDR/PREFIX, then what the role needs.
  def self.role_args(topo, host)
    args = host["addresses"].map { |net, addr| "--addr=#{net}=#{addr}/#{topo['networks'][net].split('/')[1]}" }
    args += topo["vips"].map { |net, vip| "--vip=#{net}=#{vip}" } if %w[director node].include?(host["role"])
    args << "--priority=#{host['priority']}" if host["priority"]
    args << "--route=#{host['route']['to']}=#{host['route']['via']}" if host["route"]
    topo["hosts"].each do |peer|
      args << "--peer-mac=#{peer['mac']}" if peer["role"] == host["role"] && peer != host && peer["mac"]
    end
    args + ["--src=/ipvsd"]
  end

  def self.networks(topo, host, provider)
    host["addresses"].map do |net, addr|
      cidr = IPAddr.new(topo["networks"][net])
      opts = { ip: addr, netmask: cidr.inspect[/\/(.*)>/, 1] }
      name = "ipvsd-#{topo['seed']}-#{net}"
      if provider == :libvirt
        # veryisolated: no forwarding, no DHCP; the host's own address on the bridge is one the topology leaves
        # unused (libvirt would take .1, the client's address).
        opts.merge!(libvirt__network_name: name, libvirt__forward_mode: "veryisolated",
                    libvirt__dhcp_enabled: false, libvirt__host_ip: topo["unused"][net])
        opts[:mac] = host["mac"] if host["mac"]
      else
        # An internal network: VirtualBox host-only networks only allow 192.168.56.0/21.
        opts[:virtualbox__intnet] = name
        opts[:mac] = host["mac"].delete(":") if host["mac"]
      end
      opts
    end
  end

  def self.configure(config, name)
    topo = TOPOLOGIES.fetch(name)
    config.vm.box = "debian/bookworm64"
    config.vm.synced_folder ".", "/vagrant", disabled: true
    config.vm.synced_folder CHECKOUT, "/ipvsd", type: "rsync",
                            rsync__exclude: [".git/", ".venv/", ".vagrant/", "__pycache__/", ".mypy_cache/",
                                             ".ruff_cache/", ".pytest_cache/"]
    topo["hosts"].each do |host|
      config.vm.define host["name"] do |node|
        node.vm.hostname = host["name"]
        node.vm.provider :libvirt do |lv, override|
          lv.memory = 1024
          lv.cpus = 1
          networks(topo, host, :libvirt).each { |opts| override.vm.network :private_network, **opts }
        end
        node.vm.provider :virtualbox do |vb, override|
          vb.memory = 1024
          vb.cpus = 1
          networks(topo, host, :virtualbox).each { |opts| override.vm.network :private_network, **opts }
        end
        node.vm.provision "shell", path: File.join(__dir__, "roles", "#{host['role']}.sh"),
                                   args: role_args(topo, host)
      end
    end
  end
end
