set -u
O=$OUT/o7b; mkdir -p $O
cp .devwork/build_before.sh native/build_before.sh
S=.llmc-src/llm.c
for t in old1 old2 new3; do s=native/build_before.sh; [ $t = new3 ] && s=native/build.sh; bash $s --src $S --out /tmp/b-$t --arch 90 --cudnn 0 > $O/build-$t.log 2>&1; echo "build $t rc=$?"; done
for t in new1 new2 old1 old2 new3; do for f in /tmp/b-$t/*; do echo "$t $(sha256sum $f | cut -c1-64) $(stat -c %s $f) $(readelf -Ws $f | grep -o 'tmpxft_[0-9a-f]*_[0-9a-f]*' | sort -u | tr '\n' ' ')"; done; done
cmp -l /tmp/b-old1/train_gpt2cu /tmp/b-old2/train_gpt2cu | wc -l
python3 - <<'P'
import re
a=open('/tmp/b-old1/train_gpt2cu','rb').read(); b=open('/tmp/b-old2/train_gpt2cu','rb').read()
f=lambda d: re.sub(rb"tmpxft_[0-9a-f]{8}_", b"tmpxft_00000000_", d)
print("old1 vs old2 equal:", a==b, "| equal once blanked:", f(a)==f(b), "| blanked old == new:", f(a)==open('/tmp/b-new1/train_gpt2cu','rb').read())
P
rm native/build_before.sh
