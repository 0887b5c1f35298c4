#!/bin/sh
# cas-installer-sha256 @@SHA256@@
# cas-installer-meta @@META@@
# @@TITLE@@: a self-extracting installer written by cas-installer.
#
# Run it with sh or bash: `sh @@FILE@@ -h` lists the options. It needs a POSIX sh, tar, gzip
# and coreutils (cat chmod date head mkdir mv rm rmdir sort tail wc, and sha256sum, or shasum
# or openssl to check itself); `more` shows the license when there is one. No Python, no
# conda, no network. The payload after this script is a tar archive (each package in it a
# gzip tarball); the checksum above covers every byte after the second line.
LC_ALL=C
export LC_ALL
: "${PATH:=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin}"
export PATH
cas_self=$0
cas_me=${0##*/}
if [ ! -f "$cas_self" ]; then
    echo "cas-installer: run this installer as a file: sh FILE.sh" >&2
    exit 2
fi
# A truncated file stops here, whatever part of it is missing.
cas_have=$(wc -c < "$cas_self" 2>/dev/null)
cas_have=$((cas_have + 0))
if [ "$cas_have" -ne @@TOTAL@@ ]; then
    printf '%s: error: %s is damaged: %s bytes where %s were written (an incomplete copy?); nothing was installed\n' \
        "$cas_me" "$cas_self" "$cas_have" @@TOTAL@@ >&2
    exit 1
fi

cas_name=@@NAME@@
cas_version=@@VERSION@@
cas_platform=@@PLATFORM@@
# shellcheck disable=SC2088  # a ~ kept as typed: cas_expand gives it the target's $HOME
cas_default_prefix=@@DEFAULT_PREFIX@@
cas_count=@@COUNT@@
cas_head=@@HEAD@@                  # bytes of the first two lines, outside the checksum
cas_skip=@@SKIP@@                  # bytes of this script: the payload follows
cas_max_prefix=@@MAX_PREFIX@@      # the longest prefix the binary placeholders leave room for (0: any)
cas_shebang_max=@@SHEBANG_MAX@@    # the kernel's longest #! line, as conda counts it
cas_has_license=@@HAS_LICENSE@@
cas_has_welcome=@@HAS_WELCOME@@
cas_has_post_install=@@HAS_POST_INSTALL@@
cas_args="$*"

cas_die() {
    printf '%s: error: %s\n' "$cas_me" "$1" >&2
    exit "${2:-2}"
}

cas_usage() {
    cat <<EOF
usage: $cas_me [-b] [-u] [-p PREFIX] [-h]

Installs $cas_name $cas_version ($cas_count packages, $cas_platform) into PREFIX.
Needs no network, no Python and no conda.

  -b          batch mode: no questions; the license is accepted
  -p PREFIX   where to install (default: $cas_default_prefix)
  -u          update the installation in PREFIX: packages this installer has in another
              version replace those installed, the others are left as they are
  -h          show this help and exit
EOF
}

cas_batch=0
cas_update=0
cas_prefix=
while getopts "bup:h" cas_opt; do
    case $cas_opt in
        b) cas_batch=1 ;;
        u) cas_update=1 ;;
        p) cas_prefix=$OPTARG ;;
        h) cas_usage; exit 0 ;;
        *) cas_usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || cas_die "unexpected argument: $1 (see -h)"

# ---------------------------------------------------------------- checking the payload

cas_sha256() {  # the SHA-256 of stdin, as hex
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256
    else
        openssl dgst -sha256 -r
    fi
}

if ! command -v sha256sum >/dev/null 2>&1 && ! command -v shasum >/dev/null 2>&1 &&
    ! command -v openssl >/dev/null 2>&1; then
    cas_die "cannot check this installer: no sha256sum, shasum or openssl here" 1
fi
cas_want=$(head -n 2 "$cas_self" | tail -n 1)
cas_want=${cas_want##* }
cas_got=$(tail -c +$((cas_head + 1)) "$cas_self" | cas_sha256)
cas_got=${cas_got%% *}
if [ "$cas_got" != "$cas_want" ]; then
    cas_die "$cas_self is damaged: its checksum does not match (an altered or corrupted copy?); nothing was installed" 1
fi

cas_member() {  # print one member of the payload
    tail -c +$((cas_skip + 1)) "$cas_self" | tar -xOf - "$1"
}

# ---------------------------------------------------------------- questions

cas_ask() {  # $1: the question; the answer is in cas_answer; EOF is no answer
    printf '%s' "$1"
    if ! IFS= read -r cas_answer; then
        echo
        cas_die "no answer on the standard input: use -b to install without questions"
    fi
}

if [ "$cas_batch" = 0 ]; then
    echo
    echo "Welcome to $cas_name $cas_version ($cas_platform)"
    if [ "$cas_has_welcome" = 1 ]; then
        echo
        cas_member welcome.txt
    fi
    if [ "$cas_has_license" = 1 ]; then
        echo
        cas_ask "Press ENTER to read the license. "
        echo
        if [ -t 1 ] && command -v more >/dev/null 2>&1; then
            cas_member license.txt | more
        else
            cas_member license.txt
        fi
        echo
        cas_ask "Do you accept the license terms? [yes|no] "
        while :; do
            case $cas_answer in
                [Yy][Ee][Ss]|[Yy]) break ;;
                [Nn][Oo]|[Nn])
                    echo "The license was not accepted: nothing was installed."
                    exit 2
                    ;;
            esac
            cas_ask "Please answer 'yes' or 'no': "
        done
    fi
fi

# ---------------------------------------------------------------- the prefix

cas_expand() {  # a default prefix may start with ~ or $HOME
    # shellcheck disable=SC2088,SC2016  # the patterns are the text as typed
    case $1 in
        '~' | '~/'* | '$HOME' | '$HOME/'* | '${HOME}' | '${HOME}/'*)
            [ -n "${HOME:-}" ] || cas_die "HOME is not set: give the prefix with -p PREFIX"
            case $1 in
                '~'*) printf '%s' "$HOME${1#\~}" ;;
                '${HOME}'*) printf '%s' "$HOME${1#\$\{HOME\}}" ;;
                *) printf '%s' "$HOME${1#\$HOME}" ;;
            esac
            ;;
        *) printf '%s' "$1" ;;
    esac
}

if [ -z "$cas_prefix" ]; then
    cas_prefix=$(cas_expand "$cas_default_prefix") || exit 2
    if [ "$cas_batch" = 0 ]; then
        echo
        echo "$cas_name will be installed into this location:"
        echo "$cas_prefix"
        echo
        echo "  - Press ENTER to confirm the location"
        echo "  - Press CTRL-C to abort the installation"
        echo "  - Or type a different location below"
        echo
        cas_ask "[$cas_prefix] >>> "
        [ -z "$cas_answer" ] || cas_prefix=$(cas_expand "$cas_answer") || exit 2
    fi
fi

case $cas_prefix in
    /*) ;;
    *) cas_prefix=$(pwd)/$cas_prefix ;;
esac
while :; do
    case $cas_prefix in
        */) cas_prefix=${cas_prefix%/} ;;
        *) break ;;
    esac
done
cas_nl='
'
case $cas_prefix in
    '' | / ) cas_die "will not install into /" ;;
    *' '* | *"	"* | *"$cas_nl"*)
        cas_die "the prefix must not hold spaces, tabs or newlines (programs' #! lines cannot hold them): $cas_prefix" ;;
    */./* | */../* | */. | */..) cas_die "the prefix must not hold . or .. folders: $cas_prefix" ;;
esac
cas_plen=$(printf '%s' "$cas_prefix" | wc -c)
cas_plen=$((cas_plen + 0))
if [ "$cas_max_prefix" -gt 0 ] && [ "$cas_plen" -gt "$cas_max_prefix" ]; then
    cas_die "the prefix $cas_prefix is $cas_plen bytes long; the binary files of this installer leave room for $cas_max_prefix at most: choose a shorter one; nothing was installed"
fi

cas_created=0
if [ -e "$cas_prefix" ] || [ -L "$cas_prefix" ]; then
    [ -d "$cas_prefix" ] || cas_die "$cas_prefix exists and is not a folder"
    if [ -n "$(ls -A "$cas_prefix" 2>/dev/null)" ]; then
        if [ "$cas_update" = 0 ]; then
            cas_die "$cas_prefix exists and is not empty: use -u to update the installation there, or choose another prefix"
        fi
        [ -d "$cas_prefix/conda-meta" ] ||
            cas_die "$cas_prefix holds no conda environment (no conda-meta folder): nothing to update"
    fi
else
    mkdir -p "$cas_prefix" 2>/dev/null || cas_die "cannot create $cas_prefix" 1
    cas_created=1
fi
[ -w "$cas_prefix" ] || cas_die "cannot write into $cas_prefix" 1

# ---------------------------------------------------------------- installing

cas_work=
cas_done=0
cas_cleanup() {
    [ -z "$cas_work" ] || rm -rf "$cas_work"
    if [ "$cas_done" = 0 ] && [ "$cas_created" = 1 ]; then
        rm -rf "$cas_prefix"
        echo "$cas_me: the installation did not finish: $cas_prefix was removed" >&2
    fi
}
trap cas_cleanup EXIT
trap 'exit 130' INT TERM HUP

cas_work=$cas_prefix/.cas-installer.$$
mkdir "$cas_work" || cas_die "cannot create $cas_work" 1
tail -c +$((cas_skip + 1)) "$cas_self" | tar -xf - -C "$cas_work" ||
    cas_die "cannot unpack the payload into $cas_work (is the disk full?)" 1
mkdir -p "$cas_prefix/conda-meta" || cas_die "cannot create $cas_prefix/conda-meta" 1
cas_umask=$(umask)

cas_edit() {  # carry out the planned edits of one package (placeholders.py explains the ops)
    while read -r cas_kind cas_mode cas_ph cas_nops cas_nalt cas_slen cas_sk cas_path <&5; do
        [ "$cas_kind" = t ] || [ "$cas_kind" = b ] || cas_die "bad edit list $1" 1
        cas_f=$cas_prefix/$cas_path
        cas_alt=0
        if [ "$cas_nalt" -gt 0 ] &&
            [ $((cas_slen + cas_sk * (cas_plen - cas_ph))) -gt "$cas_shebang_max" ]; then
            cas_alt=1
        fi
        cas_i=0
        {
            while [ $cas_i -lt $((cas_nops + cas_nalt)) ]; do
                read -r cas_op cas_a cas_b <&5 || cas_die "bad edit list $1" 1
                cas_i=$((cas_i + 1))
                if [ $cas_i -le "$cas_nops" ]; then
                    [ $cas_alt = 0 ] || continue
                else
                    [ $cas_alt = 1 ] || continue
                fi
                case $cas_op in
                    C)
                        if [ "$cas_a" -eq 0 ]; then
                            head -c "$cas_b" "$cas_f"
                        else
                            tail -c +$((cas_a + 1)) "$cas_f" | head -c "$cas_b"
                        fi ;;
                    E) tail -c +$((cas_a + 1)) "$cas_f" ;;
                    P) printf '%s' "$cas_prefix" ;;
                    B) printf '%s' "${cas_prefix##*/}" ;;
                    Z) head -c $((cas_a * (cas_b - cas_plen))) /dev/zero ;;
                    X) cat "$cas_work/lit/$cas_a" ;;
                    *) cas_die "bad edit list $1" 1 ;;
                esac
            done
        } > "$cas_f.cas-new" || cas_die "cannot write $cas_f.cas-new" 1
        chmod "$(printf '%o' $((0$cas_mode & ~0$cas_umask)))" "$cas_f.cas-new" &&
            mv -f "$cas_f.cas-new" "$cas_f" || cas_die "cannot replace $cas_f" 1
        case $cas_kind:$cas_platform in
            b:osx-*)  # a changed binary's signature no longer holds: sign it again, as rattler does
                [ ! -x /usr/bin/codesign ] || /usr/bin/codesign -s - -f "$cas_f" >/dev/null 2>&1 ;;
        esac
    done 5< "$1"
}

cas_files_of() {  # the "files" of a conda-meta JSON file (as conda and this installer write it)
    cas_in=0
    cas_seen=0
    while IFS= read -r cas_line || [ -n "$cas_line" ]; do
        if [ $cas_in = 0 ]; then
            case $cas_line in
                '  "files": [],' | '  "files": []') cas_seen=1 ;;
                '  "files": [') cas_in=1 cas_seen=1 ;;
            esac
            continue
        fi
        case $cas_line in
            '  ],' | '  ]') cas_in=0 ;;
            *\\*) return 1 ;;
            '    "'*'",') cas_line=${cas_line#    \"}; printf '%s\n' "${cas_line%\",}" ;;
            '    "'*'"') cas_line=${cas_line#    \"}; printf '%s\n' "${cas_line%\"}" ;;
            *) return 1 ;;
        esac
    done < "$1"
    [ $cas_seen = 1 ] && [ $cas_in = 0 ]
}

cas_field_of() {  # a string field of a conda-meta JSON file: $1 the file, $2 the key
    while IFS= read -r cas_line || [ -n "$cas_line" ]; do
        case $cas_line in
            "  \"$2\": \""*) cas_line=${cas_line#*: \"}; printf '%s' "${cas_line%\"*}"; return 0 ;;
        esac
    done < "$1"
}

cas_remove() {  # remove the files listed in $1 from the prefix, then the folders left empty
    cas_list=$1
    set --
    while IFS= read -r cas_line; do
        set -- "$@" "$cas_prefix/$cas_line"
        if [ $# -ge 200 ]; then rm -f -- "$@" || return 1; set --; fi
    done < "$cas_list"
    [ $# -eq 0 ] || rm -f -- "$@" || return 1
    while IFS= read -r cas_line; do
        while :; do
            case $cas_line in */*) cas_line=${cas_line%/*} ;; *) break ;; esac
            printf '%s\n' "$cas_prefix/$cas_line"
        done
    done < "$cas_list" | sort -r -u > "$cas_list.dirs"
    while IFS= read -r cas_line; do
        rmdir "$cas_line" 2>/dev/null
    done < "$cas_list.dirs"
    return 0
}

cas_unlink_others() {  # -u: remove the installed packages named $1 (other versions)
    for cas_meta in "$cas_prefix"/conda-meta/"$1"-*.json; do
        [ -f "$cas_meta" ] || continue
        cas_base=${cas_meta##*/}
        cas_base=${cas_base%.json}
        cas_rest=${cas_base%-*}
        [ "${cas_rest%-*}" = "$1" ] || continue
        cas_files_of "$cas_meta" > "$cas_work/unlink" ||
            cas_die "cannot read the file list of $cas_meta: update this package with conda instead" 1
        cas_old_channel=$(cas_field_of "$cas_meta" channel)
        cas_old_subdir=$(cas_field_of "$cas_meta" subdir)
        cas_remove "$cas_work/unlink" || cas_die "cannot remove the files of $cas_base" 1
        rm -f "$cas_meta" || cas_die "cannot remove $cas_meta" 1
        printf '%s::%s\n' "-${cas_old_channel:+$cas_old_channel/}${cas_old_subdir}" "$cas_base" >> "$cas_work/history"
        echo "  removed   $cas_base"
    done
}

cas_post_link() {  # a package's own post-link script, as conda runs it
    cas_script=$cas_prefix/bin/.$1-post-link.sh
    [ -f "$cas_script" ] || return 0
    cas_shell='sh'
    command -v bash >/dev/null 2>&1 && cas_shell=bash
    PREFIX=$cas_prefix PKG_NAME=$1 PKG_VERSION=$2 PKG_BUILDNUM=$3 "$cas_shell" "$cas_script" \
        >> "$cas_prefix/.messages.txt" 2>&1 ||
        cas_die "the post-link script of $1-$2 failed (see $cas_prefix/.messages.txt)" 1
}

: > "$cas_work/history"
echo
echo "Installing $cas_name $cas_version into $cas_prefix"
cas_installed=0
while read -r cas_n cas_flags cas_pname cas_pversion cas_pbuild cas_pbuildnum cas_pchannel <&4; do
    cas_stem=$cas_pname-$cas_pversion-$cas_pbuild
    if [ -f "$cas_prefix/conda-meta/$cas_stem.json" ]; then
        echo "  kept      $cas_stem (installed already)"
        continue
    fi
    [ "$cas_update" = 0 ] || cas_unlink_others "$cas_pname"
    gzip -dc "$cas_work/pkgs/$cas_n.tar.gz" | tar -xf - -C "$cas_prefix" ||
        cas_die "cannot unpack $cas_stem into $cas_prefix (is the disk full?)" 1
    case $cas_flags in *e*) cas_edit "$cas_work/edits/$cas_n" ;; esac
    cat "$cas_work/meta/$cas_n.json" > "$cas_prefix/conda-meta/.$cas_stem.json" &&
        mv -f "$cas_prefix/conda-meta/.$cas_stem.json" "$cas_prefix/conda-meta/$cas_stem.json" ||
        cas_die "cannot write $cas_prefix/conda-meta/$cas_stem.json" 1
    case $cas_flags in *l*) cas_post_link "$cas_pname" "$cas_pversion" "$cas_pbuildnum" ;; esac
    printf '+%s::%s\n' "$cas_pchannel" "$cas_stem" >> "$cas_work/history"
    echo "  installed $cas_stem"
    cas_installed=$((cas_installed + 1))
done 4< "$cas_work/manifest"

{
    echo "==> $(date '+%Y-%m-%d %H:%M:%S') <=="
    echo "# cmd: $cas_me $cas_args"
    echo "# cas-installer: $cas_name $cas_version $cas_platform"
    cat "$cas_work/history"
    cat "$cas_work/specs"
} >> "$cas_prefix/conda-meta/history" || cas_die "cannot write $cas_prefix/conda-meta/history" 1

if [ "$cas_has_post_install" = 1 ]; then
    cas_script=$cas_work/post_install
    chmod 755 "$cas_script"
    if [ "$(head -c 2 "$cas_script")" = '#!' ]; then
        set -- "$cas_script"
    else
        set -- sh "$cas_script"
    fi
    PREFIX=$cas_prefix INSTALLER_NAME=$cas_name INSTALLER_VER=$cas_version INSTALLER_PLAT=$cas_platform \
        INSTALLER_TYPE=SH INSTALLER_UNATTENDED=$cas_batch "$@" ||
        cas_die "the post_install script failed (exit status $?); the packages are installed" 1
fi

cas_done=1
echo
echo "$cas_name $cas_version: $cas_installed of $cas_count packages installed into $cas_prefix"
exit 0
